"""Real vLLM CPU serving of every tiny target, without and with an EAGLE-3 draft, through our entry point.

One engine at a time: a module-scoped fixture per family runs, in sequence,
  1. the target alone           -> greedy tokens (the reference), served with the family's media prompt;
  2. target + our random draft  -> greedy tokens (must be identical), spec-decode counters, and what vLLM handed
                                   the draft (EAGLE3_PLUGIN_DUMP_DIR): aux states + positions for one prompt;
  3. a deterministic full-acceptance pair (final norms of target and draft zeroed: both always pick token 0), whose
     draft is in the layout of AngelSlim's published drafts (Eagle3LlamaForCausalLM, engine-default aux layers),
     which must work with the same targets without hand edits or hf_overrides
and the tests assert on the collected numbers.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from helpers import (CACHE, chat_prompts, const_target, generate_inputs, make_llm, random_draft, shutdown,
                     spec_counters, target_config, tiny)

FAMILIES = ["text", "qwen3_vl", "hunyuan_vl", "qwen2_audio"]
MAX_TOKENS = 24
K = 3


def _greedy(llm, family):
    from vllm import SamplingParams
    sp = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    chats = llm.chat(chat_prompts(family, 4), sp)
    gens = llm.generate(generate_inputs(family, llm.get_tokenizer(), 2), sp)
    return [list(o.outputs[0].token_ids) for o in chats + gens], [len(o.prompt_token_ids) for o in chats + gens]


def _probe_one(llm, family):
    """One prompt alone (so the first draft forward is exactly its prefill), returns its prompt token ids."""
    from vllm import SamplingParams
    inp = generate_inputs(family, llm.get_tokenizer(), 1)[0]
    out = llm.generate([inp], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    return inp, list(out[0].prompt_token_ids)


@pytest.fixture(scope="module", params=FAMILIES)
def served(request):
    family = request.param
    target = tiny(family)
    draft = random_draft(target, CACHE / f"draft-random-{family}")
    res = {"family": family, "target": target}

    llm = make_llm(target)
    res["base_tokens"], res["prompt_lens"] = _greedy(llm, family)
    shutdown(llm)

    dump = Path(tempfile.mkdtemp(prefix=f"eagle3-dump-{family}-"))
    os.environ["EAGLE3_PLUGIN_DUMP_DIR"] = str(dump)
    try:
        llm = make_llm(target, draft, k=K)
    finally:
        os.environ.pop("EAGLE3_PLUGIN_DUMP_DIR", None)
    res["probe_input"], res["probe_ids"] = _probe_one(llm, family)
    res["dump"] = dump
    before = spec_counters(llm)
    res["spec_tokens"], _ = _greedy(llm, family)
    after = spec_counters(llm)
    res["spec"] = {k: (after[k] - before[k]) if k != "per_pos" else
                   [a - b for a, b in zip(after[k], before[k] or [0] * len(after[k]))] for k in after}
    shutdown(llm)

    ct = const_target(target, CACHE / f"const-target-{family}")
    cd = random_draft(target, CACHE / f"draft-const-published-{family}", const=True, published_layout=True)
    llm = make_llm(ct, cd, k=K)
    from vllm import SamplingParams
    llm.chat(chat_prompts(family, 2), SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    res["const"] = spec_counters(llm)
    shutdown(llm)
    yield res


def test_served_without_speculation_with_media_prompt(served):
    assert len(served["base_tokens"]) == 6
    assert all(len(t) == MAX_TOKENS for t in served["base_tokens"])
    if served["family"] != "text":   # the media really expanded into the prompt
        assert min(served["prompt_lens"]) > 60


def test_eagle3_greedy_output_is_token_identical(served):
    assert served["spec_tokens"] == served["base_tokens"]


def test_spec_decode_metrics_present(served):
    s = served["spec"]
    assert s["drafts"] > 0 and s["draft_tokens"] == K * s["drafts"]
    assert len(s["per_pos"]) == K and 0 <= s["accepted"] <= s["draft_tokens"]
    print(f"[{served['family']}] random draft: drafts={s['drafts']} accepted={s['accepted']} "
          f"AL={1 + s['accepted'] / s['drafts']:.2f}")


def test_full_acceptance_pair_accepts_every_proposal(served):
    c = served["const"]
    print(f"[{served['family']}] const pair: {c}")
    assert c["drafts"] > 0
    assert c["accepted"] == c["draft_tokens"] == K * c["drafts"]
    assert c["per_pos"] == [c["drafts"]] * K


def _first_dump(dump: Path, kind: str):
    from safetensors.torch import load_file
    files = sorted(dump.glob(f"{kind}-*.safetensors"), key=lambda p: int(p.stem.split("-")[-1]))
    assert files, f"the draft wrote no {kind} dump: is the family draft class in use?"
    return load_file(str(files[0]))


def test_what_vllm_hands_the_draft_matches_the_trainer(served):
    """The aux states and positions vLLM feeds the draft for a media prompt equal what eagle3-train computes with
    transformers for the same input at the configured layer ids (bf16 tolerance for states, exact positions)."""
    family = served["family"]
    if family == "text":   # text drafts run on vLLM's built-in LlamaForCausalLMEagle3: none of our code is involved
        assert not list(served["dump"].iterdir())
        return
    import json
    from eagle3_plugin.checkpoint import aux_layer_ids
    from eagle3_plugin.trainer.target import Target
    target = Target(served["target"], dtype=torch.bfloat16)
    ids = aux_layer_ids(json.loads((CACHE / f"draft-random-{family}" / "config.json").read_text()))
    inp = served["probe_input"]
    mm = inp["multi_modal_data"]
    kwargs = {"images": [mm["image"]]} if "image" in mm else {"audio": [mm["audio"][0]],
                                                            "sampling_rate": mm["audio"][1]}
    batch = _processor(served["target"])(text=[inp["prompt"]], return_tensors="pt", **kwargs)
    assert batch["input_ids"][0].tolist() == served["probe_ids"], "HF and vLLM tokenised the prompt differently"
    feats = target.features(dict(batch), ids)
    n = len(served["probe_ids"])

    got = _first_dump(served["dump"], "aux")["aux"].float()
    want = feats.aux[0].float()
    assert got.shape == want.shape and got.shape[0] == n
    h = got.shape[-1] // 3
    for j in range(3):
        g, w = got[:, j * h:(j + 1) * h], want[:, j * h:(j + 1) * h]
        cos = torch.nn.functional.cosine_similarity(g, w, dim=-1)
        rel = (g - w).norm() / w.norm()
        print(f"[{family}] aux layer {ids[j]}: min cos {cos.min():.5f} rel err {rel:.4f}")
        assert cos.min() > 0.995 and rel < 0.05

    got = _first_dump(served["dump"], "fwd")["positions"]
    want = feats.positions[:, 0] if feats.positions.dim() == 3 else feats.positions[0]
    assert got.shape[-1] == n
    assert torch.equal(got.long(), want.long()), f"vLLM positions {got} != trainer positions {want}"
    if family == "qwen3_vl":   # image tokens really have 2-D positions: the M-RoPE path is exercised
        assert not torch.equal(got[1], got[0])


def _processor(path):
    import transformers
    return transformers.AutoProcessor.from_pretrained(path)
