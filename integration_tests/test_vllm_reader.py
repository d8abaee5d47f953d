"""The competent vision targets (Qwen3-VL and HunyuanOCR readers) in real vLLM (CPU), served as users serve them:
they read held-out renders as well as they do in transformers, and the drafts shipped for them (trained by
`benchmarks/recipes.py --target-variant reader --ship`: ours and the anchors' classic recipe, same data and budget)
read too, leave the greedy answers token for token unchanged, and reproduce the acceptance their training run
measured. One engine per reader: the classic draft is swapped in by weight (helpers.DraftSwap)."""
import json

import pytest

from eagle3_plugin import fixtures
from eagle3_plugin.devtools import reading
from helpers import DRAFT_SWAP, make_llm, shutdown, swap_draft

BAR = 0.80                 # held-out character accuracy of the target itself
OURS_OVER_CLASSIC = 1.25   # issue #15: ours >= 1.25 x classic in vLLM acceptance length at k = 3, held out
K = 3
READERS = ("qwen3_vl-reader", "hunyuan_vl-reader")


def _delivered(run) -> float:
    """Output tokens after each request's first, per verify step (what reaches the user, unlike vLLM's counters,
    which also count draft tokens accepted past the end of an answer)."""
    return (run.output_tokens - run.prompts) / run.spec.verifies


@pytest.fixture(scope="module", params=READERS)
def served(request, tmp_path_factory):
    from vllm import SamplingParams
    from eagle3_plugin.bench.prompts import from_jsonl
    from eagle3_plugin.bench.vllm_offline import run_one
    reader = request.param
    target = fixtures.competent_target(reader)
    drafts = {name: fixtures.shipped_draft(f"{reader}-{name}") for name in ("ours", "classic")}
    trained_by = {name: json.loads((d / "trained_by.json").read_text()) for name, d in drafts.items()}
    work = tmp_path_factory.mktemp(reader)
    held_rows = reading.write_conversations(work, "heldout")
    seen_rows = reading.write_conversations(work, "train", trained_by["ours"]["training_prompts"], first=40)
    held, seen = from_jsonl(held_rows), from_jsonl(seen_rows)
    texts = [json.loads(line)["text"] for line in held_rows.read_text().splitlines()]
    sp = SamplingParams(temperature=0, max_tokens=48)
    out = {"reader": reader, "texts": texts, "trained_by": trained_by, "held": len(held), "seen": len(seen)}

    llm = make_llm(target)          # the settings of the drafts' training run (benchmarks/recipes.py)
    out["base"] = run_one(llm, held, sp, "baseline", {}, None)
    out["base_seen"] = run_one(llm, seen, sp, "baseline, training media", {}, None)
    tok = llm.get_tokenizer()
    out["base_text"] = [tok.decode(t, skip_special_tokens=True).strip() for t in out["base"].outputs]
    shutdown(llm)

    llm = make_llm(target, drafts["ours"], k=K, worker_extension_cls=DRAFT_SWAP)
    try:
        for name in ("ours", "classic"):
            if name != "ours":
                swap_draft(llm, drafts[name])
            out[name] = run_one(llm, held, sp, name, {"num_speculative_tokens": K}, K)
            out[f"{name}_seen"] = run_one(llm, seen, sp, f"{name}, training media", {"num_speculative_tokens": K}, K)
    finally:
        shutdown(llm)
    return out


def test_vllm_reads_held_out_text(served):
    acc = [reading.char_accuracy(t, g) for t, g in zip(served["texts"], served["base_text"])]
    print(f"\n{served['reader']} in vLLM, greedy: character accuracy {sum(acc) / len(acc):.1%} on {len(acc)} "
          "held-out renders")
    assert sum(acc) / len(acc) >= BAR


def test_eagle3_leaves_the_reader_s_answers_unchanged(served):
    for name in ("ours", "classic"):
        assert served[name].outputs == served["base"].outputs, f"{name} draft changed a held-out answer"
        assert served[f"{name}_seen"].outputs == served["base_seen"].outputs, f"{name} draft changed an answer"


def test_the_shipped_draft_reads_held_out_renders(served):
    """Ours accepts >= 1.25 x the classic recipe on renders of words no training render holds, by vLLM's counters and
    by what reaches the output; the training-media figure beside it is the memorisation gap."""
    al = {n: served[n].spec.acceptance_length() for n in ("ours", "classic", "ours_seen", "classic_seen")}
    dl = {n: _delivered(served[n]) for n in ("ours", "classic", "ours_seen")}
    print(f"\n{served['reader']} k={K}, {served['held']} held-out / {served['seen']} training renders: ours "
          f"{al['ours']:.2f} (delivered {dl['ours']:.2f}; training media {al['ours_seen']:.2f}), classic "
          f"{al['classic']:.2f} (delivered {dl['classic']:.2f}; training media {al['classic_seen']:.2f})")
    assert al["ours"] >= OURS_OVER_CLASSIC * al["classic"]
    assert dl["ours"] >= OURS_OVER_CLASSIC * dl["classic"]
    assert dl["ours"] >= 1.3          # it reads: a third of a token or more per verify beyond the target's own


def test_the_shipped_drafts_reproduce_their_training_run(served):
    """The acceptance length the shipped drafts' training run measured in vLLM (their trained_by.json) is what this
    engine measures on the same held-out renders: the README's reader figures are reproducible."""
    for name in ("ours", "classic"):
        assert served[name].spec.acceptance_length() == pytest.approx(
            served["trained_by"][name]["acceptance_length"], abs=0.05), name
