"""`eagle3-train bench` against SGLang-shaped servers: the SGLang path (launching one server per tree configuration,
or using a running one) run end to end against tests/fake_sglang_server.py, which speaks SGLang 0.5.23's fields
with a deterministic acceptance pattern, so every number in the report can be checked exactly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fake_sglang_server import simulate  # noqa: E402

N_PROMPTS, OUT_LEN = 3, 12


@pytest.fixture(scope="module")
def text_target(tmp_path_factory):
    import os
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    return cached_tiny_target("text", cache_dir=os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("c"))


def _bench(args, out):
    r = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "bench", *args, "--output", str(out),
                        "--num-prompts", str(N_PROMPTS), "--output-len", str(OUT_LEN)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text(), r.stdout


def test_sglang_tree_sweep_report(tmp_path, text_target):
    rep, md, _ = _bench(["--engine", "sglang", "--target", str(text_target), "--draft", str(text_target),
                         "--steps", "2", "3", "--topk", "1", "4", "--draft-tokens", "8",
                         "--server-cmd", f"{sys.executable} {HERE / 'fake_sglang_server.py'}"], tmp_path / "r")
    runs = {r["label"]: r for r in rep["runs"]}
    assert list(runs) == ["baseline", "2-1-8", "2-4-8", "3-1-8", "3-4-8"]
    assert "counts" not in runs["baseline"] and runs["baseline"]["output_tokens"] == N_PROMPTS * OUT_LEN
    for label, r in runs.items():
        if label == "baseline":
            continue
        steps = r["config"]["steps"]
        v, c, hist = simulate(OUT_LEN, steps)
        counts = r["counts"]
        assert counts["verifies"] == N_PROMPTS * v and counts["accepted"] == N_PROMPTS * c
        assert counts["proposed"] == N_PROMPTS * v * (8 - 1)
        assert counts["histogram"] == [N_PROMPTS * h for h in hist]
        assert counts["per_pos"] == [N_PROMPTS * sum(hist[i + 1:]) for i in range(steps)]
        assert r["acceptance_length"] == pytest.approx(1 + c / v)
        assert r["acceptance_rate"] == pytest.approx(c / (v * 7))
        assert counts["rate_cap"] == pytest.approx(steps / 7)
        assert counts["engine_reported_al"] == pytest.approx(OUT_LEN / v)       # /server_info, cumulative
        assert r["lossless"] is True and r["speedup"] > 0 and r["speedup_bound"] == r["acceptance_length"]
        assert r["prefill_latency_s"]["p50"] <= r["e2e_latency_s"]["p50"]
    assert "`topk` is not the tree width" in md and "acceptance LENGTH" in md and "| 3-4-8 |" in md
    assert (tmp_path / "r" / "report.png").stat().st_size > 10_000


def test_sglang_running_server(tmp_path, text_target):
    from eagle3_plugin.launch import Subprocess, free_port
    port = free_port()
    cmd = [sys.executable, str(HERE / "fake_sglang_server.py"), "--model-path", "m", "--port", str(port),
           "--speculative-algorithm", "EAGLE3", "--speculative-num-steps", "4", "--speculative-eagle-topk", "1",
           "--speculative-num-draft-tokens", "5"]
    with Subprocess(cmd, tmp_path / "log", f"http://127.0.0.1:{port}/health"):
        rep, _, out = _bench(["--engine", "sglang", "--url", f"http://127.0.0.1:{port}", "--no-plot"], tmp_path / "r")
    (run,) = rep["runs"]
    v, c, hist = simulate(OUT_LEN, 4)
    assert run["counts"]["verifies"] == N_PROMPTS * v and run["counts"]["histogram"] == [N_PROMPTS * h for h in hist]
    assert "speedup" not in run          # no baseline server given: nothing to compare against
    assert "| eagle3 |" in out


def test_bad_dataset_name_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "bench", "--engine", "sglang",
                        "--url", "http://127.0.0.1:9", "--dataset", "nope", "--output", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown dataset 'nope'" in r.stderr and "--data" in r.stderr
