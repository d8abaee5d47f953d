"""SGLang integration tests: every check runs through SGLang's own code in a fresh subprocess (``sgl_worker.py``).

The subprocess installs a torchvision/torchaudio stub (SGLang imports them at module level; PyPI's builds are CUDA
only). The pytest process never imports SGLang, so the stub cannot leak into the vLLM tests.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eagle3_plugin.families import FAMILIES as TABLE

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORKER = HERE / "sgl_worker.py"
FAMILIES = tuple(TABLE)


def _cache_dir() -> Path:
    return Path(os.environ.get("EAGLE3_CACHE") or REPO / ".cache")


@pytest.fixture(scope="session")
def sgl_tiny_targets():
    """Build the tiny targets once, here (the worker must not build them under the torchvision stub)."""
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    return {f: cached_tiny_target(f, cache_dir=_cache_dir()) for f in FAMILIES}


@pytest.fixture(scope="session")
def sgl_trained_draft(sgl_tiny_targets):
    """A Qwen3-VL draft written by `eagle3-train train` itself (a few steps, pruned vocab), for the load/forward
    checks; trained here, outside the worker's torchvision stub."""
    from eagle3_plugin import fixtures
    from eagle3_plugin.trainer.config import TrainConfig
    from eagle3_plugin.trainer.loop import train
    out = _cache_dir() / "sgl-trained-draft-qwen3_vl"
    if not (out / "model.safetensors").exists():
        train(TrainConfig(target=str(sgl_tiny_targets["qwen3_vl"]), data=str(fixtures.CONVERSATIONS),
                          output=str(out), max_steps=6, draft_vocab_size=300, eval_every=1000, save_every=6,
                          progress=False))
    return out


@pytest.fixture(scope="module")
def sgl_run(tmp_path_factory, sgl_tiny_targets, sgl_trained_draft):
    """run(checks, env=None) -> {check: data}; fails the test with the worker's traceback on any error."""
    def run(checks, env=None, timeout=420):
        work = tmp_path_factory.mktemp("sgl")
        out = work / "result.json"
        penv = {k: v for k, v in os.environ.items() if k not in ("SGLANG_USE_CPU_ENGINE", "SGLANG_PLUGINS")}
        penv.update({"EAGLE3_SGL_WORKDIR": str(work), "EAGLE3_CACHE": str(_cache_dir()),
                     "EAGLE3_SGL_TRAINED_DRAFT": str(sgl_trained_draft),
                     "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"})
        penv.update(env or {})
        proc = subprocess.run([sys.executable, str(WORKER), str(out), *checks], env=penv, cwd=str(REPO),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            pytest.fail(f"SGLang worker exited with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
                        f"--- stderr\n{proc.stderr[-8000:]}")
        results = json.loads(out.read_text())
        failed = {k: v["error"] for k, v in results.items() if not v["ok"]}
        if failed:
            pytest.fail("SGLang check(s) raised:\n" + "\n".join(f"[{k}]\n{e}" for k, e in failed.items()))
        return {k: v["data"] for k, v in results.items()}
    return run
