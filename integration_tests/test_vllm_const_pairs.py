"""Deterministic full-acceptance pairs on real vLLM CPU engines, per family: the short suite scripts/matrix.sh runs
against every vLLM release it tests.

Target and draft have their final text norm zeroed, so both always pick token 0: with the draft, vLLM's greedy
output must equal the target's alone (token-identical) and every proposed token must be accepted. The draft comes in
two layouts: AngelSlim's published one (Eagle3LlamaForCausalLM, engine-default aux layers, no eagle3_plugin block)
and ours (the family's draft architecture, written by the trainer's writer). One engine at a time; each is shut down
before the next starts; results are cached for the module, so every engine starts once.
"""
from __future__ import annotations

import pytest

from eagle3_plugin.families import FAMILIES as TABLE
from helpers import CACHE, chat_prompts, const_target, make_llm, random_draft, shutdown, spec_counters, tiny

pytestmark = pytest.mark.vllm

FAMILIES = [f for f in ("text", "qwen3_vl", "hunyuan_vl", "qwen2_audio") if f in TABLE]
LAYOUTS = ("published", "ours")
K = 3
MAX_TOKENS = 16

_CACHE: dict = {}      # (family, "base" | layout) -> result dict, or the exception the engine raised


def _serve(family: str, draft_kind: str | None) -> dict:
    from vllm import SamplingParams
    target = tiny(family)
    ct = const_target(target, CACHE / f"const-{target.name}")
    draft = None
    if draft_kind:
        draft = random_draft(target, CACHE / f"draft-const-{draft_kind}-{target.name}", const=True,
                             published_layout=draft_kind == "published")
    llm = make_llm(ct, draft, k=K)
    try:
        before = spec_counters(llm)
        outs = llm.chat(chat_prompts(family, 4), SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True),
                        use_tqdm=False)
        after = spec_counters(llm)
    finally:
        shutdown(llm)
    counts = {k: after[k] - before[k] for k in ("drafts", "draft_tokens", "accepted")}
    counts["per_pos"] = [a - b for a, b in zip(after["per_pos"], before["per_pos"] or [0] * len(after["per_pos"]))]
    return {"tokens": [list(o.outputs[0].token_ids) for o in outs], "spec": counts}


def result(family: str, kind: str) -> dict:
    key = (family, kind)
    if key not in _CACHE:
        try:
            _CACHE[key] = _serve(family, None if kind == "base" else kind)
        except Exception as e:  # noqa: BLE001 - cached so the engine is not restarted by the next test
            _CACHE[key] = e
    r = _CACHE[key]
    if isinstance(r, Exception):
        raise r
    return r


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_const_pair_greedy_output_is_token_identical(family, layout):
    base = result(family, "base")["tokens"]
    assert len(base) == 4 and all(len(t) == MAX_TOKENS for t in base)
    assert result(family, layout)["tokens"] == base


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_const_pair_accepts_every_proposal(family, layout):
    c = result(family, layout)["spec"]
    print(f"[{family}/{layout}] const pair: {c}")
    assert c["drafts"] > 0
    assert c["accepted"] == c["draft_tokens"] == K * c["drafts"]
    assert c["per_pos"] == [c["drafts"]] * K
