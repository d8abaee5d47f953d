"""Multi-process training on CPU (gloo): `torchrun --nproc-per-node 2 eagle3-train train` computes the same steps as
one process with the same global batch, with plain data parallelism and with DeepSpeed ZeRO-2; the output loads
and passes `check`."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from eagle3_plugin import fixtures
from eagle3_plugin.launch import free_port
from eagle3_plugin.devtools.tiny import cached_tiny_target

ARGS = ["--max-steps", "6", "--batch-size", "2", "--ttt-steps", "3", "--save-every", "3", "--eval-every", "1000",
        "--warmup-steps", "2", "--no-progress", "--draft-vocab-size", "400"]


@pytest.fixture(scope="module")
def text_target(tmp_path_factory):
    return cached_tiny_target("text", cache_dir=os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("c"))


def _train(target, out, nproc=1, extra=()):
    cli = ["-m", "eagle3_plugin.entry_points.cli", "train", "--target", str(target), "--data",
           str(fixtures.CONVERSATIONS), "--output", str(out), *ARGS, *extra]
    if nproc == 1:
        cmd = [sys.executable, *cli]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
               str(free_port()), *cli]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    (state,) = (out / "train_state").glob("step-????????")        # only the newest complete state is kept
    return r.stdout, load_file(str(state / "draft_fp32.safetensors"))


def _maxrel(a, b):
    return max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item()
               for k in a if a[k].is_floating_point())


def test_two_processes_match_one(tmp_path, text_target):
    _, one = _train(text_target, tmp_path / "one")
    out, two = _train(text_target, tmp_path / "two", nproc=2)
    assert '"processes": 2' in out
    _, ds = _train(text_target, tmp_path / "ds", nproc=2, extra=["--deepspeed", "zero2"])
    assert (tmp_path / "ds" / "train_state" / "step-00000006" / "deepspeed").is_dir()   # ZeRO partitions
    assert _maxrel(one, two) < 1e-4, "2-process data parallel diverged from 1 process"
    assert _maxrel(one, ds) < 1e-4, "DeepSpeed ZeRO-2 diverged from 1 process"
    for d in ("two", "ds"):
        ok = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "check", str(tmp_path / d),
                             "--target", str(text_target)], capture_output=True, text=True)
        assert ok.returncode == 0, ok.stdout


def test_deepspeed_refuses_zero3_and_uneven_batches(tmp_path, text_target):
    cfg = tmp_path / "ds.json"
    cfg.write_text('{"zero_optimization": {"stage": 3}}')
    r = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "train", "--target", str(text_target),
                        "--data", str(fixtures.CONVERSATIONS), "--output", str(tmp_path / "o"), *ARGS,
                        "--deepspeed", str(cfg)], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "ZeRO stage 3 is not supported" in r.stderr
