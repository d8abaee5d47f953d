"""Qwen3-VL drafts for vLLM's two runners, fast mode of benchmarks/runner_positions.py: one seed, 100 steps of 8
image conversations for `--vllm-runner v1` and `v2` on the pipeline's pretrained tiny Qwen3-VL target (~3 min on 2
cores once the target is built; it is shared with the other benchmarks), each scored by the trainer's held-out
evaluation under both runners' positions. Served as trained, the V2 draft reaches at least 0.98 x the V1 draft's
held-out acceptance length; held-out answers share no 12-word run with a training answer. EAGLE3_BENCH_FULL=1: the
README's three seeds."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

FULL = os.environ.get("EAGLE3_BENCH_FULL") == "1"
FAST = ["--steps", "100", "--seeds", "3" if FULL else "1"]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runner-positions-results")


def test_a_draft_trained_for_v2_accepts_as_much_as_one_trained_for_v1(benchmark, cache, results_dir):
    import runner_positions as rp
    res = benchmark.pedantic(rp.main, args=(FAST + ["--cache", cache, "--results", str(results_dir)],),
                             rounds=1, iterations=1)
    al, s = res["heldout_al_k3"], res["served_as_trained"]
    benchmark.extra_info.update(v1=s["v1"], v2=s["v2"], ratio=s["ratio"], v1_on_v2=al["v1"]["v2"])
    print(f"\nheld-out AL k=3: v1 draft on V1 {s['v1']:.4f}, v2 draft on V2 {s['v2']:.4f} (x{s['ratio']:.4f}); "
          f"v1 draft on V2 {al['v1']['v2']:.4f}, v2 draft on V1 {al['v2']['v1']:.4f}")
    assert s["v1"] > 1.5, s                          # the drafts learned, else equal ALs would say nothing
    assert s["ratio"] >= 1 - rp.AL_BAR and s["met"], s
    assert res["data"]["heldout_answers_sharing_a_word_run"] == 0 and res["data"]["heldout_conversations"] == 32
    block = rp.table(results_dir)
    assert "`--vllm-runner v2`" in block and f"{s['ratio']:.3f}" in block
