"""Packing (`--batch-tokens`), fast mode of benchmarks/packing.py: the same conversations, seed, steps and batch size
(8 conversations per step) trained twice by the real trainer on the pipeline's pretrained tiny text target, one
conversation per forward and packed (one forward per step), both evaluated on the same held-out conversations
(~40 s on 2 cores once the target and the conversations are built; both are shared with test_bench_storage.py).

Packed loss and gradients equal the one-by-one ones up to fp32 rounding (tests/test_batching.py), so the two drafts'
held-out acceptance lengths must agree (within 1 % relative). The speed ratio is printed and stored, not asserted
beyond being a positive finite number: timing on a shared 2-core box is noisy. The qwen3_vl target runs in the full
script only (CI budget). EAGLE3_BENCH_FULL=1: more steps."""
import math
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

FULL = os.environ.get("EAGLE3_BENCH_FULL") == "1"
FAST = ["--families", "text", "--steps", "100" if FULL else "16", "--warmup", "3", "--batch-size", "8"]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("packing-results")


def test_packed_training_matches_one_by_one(benchmark, cache, results_dir):
    import packing
    res = benchmark.pedantic(packing.main, args=(FAST + ["--cache", cache, "--results", str(results_dir)],),
                             rounds=1, iterations=1)
    r = res["families"]["text"]
    one, packed = r["runs"]["one_by_one"], r["runs"]["packed"]
    benchmark.extra_info.update(tokens_per_s_one_by_one=one["tokens_per_s"], tokens_per_s_packed=packed["tokens_per_s"],
                                tokens_per_s_ratio=r["tokens_per_s_ratio"], al=r["heldout_al_k3"])
    print(f"\npacked / one-by-one training tokens/s: {r['tokens_per_s_ratio']:.2f}x "
          f"({packed['tokens_per_s']:.0f} vs {one['tokens_per_s']:.0f}); held-out AL "
          f"{r['heldout_al_k3']['packed']:.4f} vs {r['heldout_al_k3']['one_by_one']:.4f}")
    # the same work: every step's conversations, trained on in both runs; packed ones in a single forward
    assert one["measured_tokens"] == packed["measured_tokens"] > 0
    assert one["trained_steps"] == packed["trained_steps"] == int(FAST[FAST.index("--steps") + 1])
    assert one["forwards_per_step"] == 8 and packed["forwards_per_step"] == 1
    assert one["padding_share"] == 0 and 0 <= packed["padding_share"] < 1
    # the drafts learned (else matching ALs would say nothing) and agree
    al = r["heldout_al_k3"]
    assert al["one_by_one"] > 1.3, al
    assert abs(al["packed"] / al["one_by_one"] - 1) <= 0.01, al
    assert al["match"]
    for x in (one, packed):
        assert math.isfinite(x["tokens_per_s"]) and x["tokens_per_s"] > 0, x
    assert math.isfinite(r["tokens_per_s_ratio"]) and r["tokens_per_s_ratio"] > 0
    # held-out conversations are disjoint from the training ones
    assert r["data"]["shared_prompts"] == 0 and r["data"]["heldout_conversations"] == 32


def test_the_table_renders_from_the_results(results_dir):
    import packing
    if not (results_dir / packing.RESULTS_NAME).exists():
        pytest.skip("the benchmark above did not write its results")
    block = packing.table(results_dir)
    assert "packed / one-by-one" in block and "tiny Qwen3 text target" in block
