"""Real vLLM CPU serving of every tiny target, without and with EAGLE-3 drafts written by eagle3-train, through our
entry point. Targets are tiny real checkpoints whose text stack was pretrained on the bundled corpus.

Per family, `pipeline()` runs the product's training path: prompts -> `eagle3-train regenerate` through `vllm serve`
-> online training. Then one engine at a time:
  1. the target alone             -> greedy tokens (the reference) for media chats, raw prompts and held-out prompts;
  2. target + the trained draft   -> the same greedy tokens (lossless), spec-decode counters, acceptance length on
                                     held-out prompts, and what vLLM handed the draft (EAGLE3_PLUGIN_DUMP_DIR);
  3. target + an untrained draft  -> the acceptance length training must clearly beat;
  4. text and Qwen3-VL: a draft trained offline (dump-features, then train --features) on the same data;
  5. a deterministic full-acceptance pair (final norms of target and draft zeroed: both always pick token 0), whose
     draft is in the layout of AngelSlim's published drafts (Eagle3LlamaForCausalLM, engine-default aux layers),
     which must work with the same targets without hand edits or hf_overrides.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from helpers import (CACHE, chat_prompts, const_target, generate_inputs, heldout_chats, make_llm, pipeline,
                     random_draft, shutdown, spec_counters, target_config)

FAMILIES = ["text", "qwen3_vl", "hunyuan_vl", "qwen2_audio"]
OFFLINE = ("text", "qwen3_vl")
MAX_TOKENS = 24
K = 3


def _greedy(llm, family, heldout):
    from vllm import SamplingParams
    sp = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    chats = llm.chat(chat_prompts(family, 4), sp, use_tqdm=False)
    gens = llm.generate(generate_inputs(family, llm.get_tokenizer(), 2), sp, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in chats + gens], [len(o.prompt_token_ids) for o in chats + gens]


def _heldout(llm, chats):
    """Greedy answers on held-out prompts and the acceptance counters for exactly those requests."""
    from vllm import SamplingParams
    before = spec_counters(llm) if llm.llm_engine.vllm_config.speculative_config else None
    outs = llm.chat(chats, SamplingParams(temperature=0, max_tokens=48), use_tqdm=False)
    tokens = [list(o.outputs[0].token_ids) for o in outs]
    if before is None:
        return tokens, None
    after = spec_counters(llm)
    d = {k: after[k] - before[k] for k in ("drafts", "draft_tokens", "accepted")}
    d["per_pos"] = [a - b for a, b in zip(after["per_pos"], before["per_pos"] or [0] * len(after["per_pos"]))]
    d["al"] = 1 + d["accepted"] / max(d["drafts"], 1)
    return tokens, d


def _probe_one(llm, family):
    """One prompt alone (so the first draft forward is exactly its prefill), returns its prompt token ids."""
    from vllm import SamplingParams
    inp = generate_inputs(family, llm.get_tokenizer(), 1)[0]
    out = llm.generate([inp], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True), use_tqdm=False)
    return inp, list(out[0].prompt_token_ids)


def _offline_draft(family, pipe) -> Path:
    from eagle3_plugin.families import family_for_target
    from eagle3_plugin.trainer.data import Tokenizer, load_samples
    from eagle3_plugin.trainer.features import dump_features
    from eagle3_plugin.trainer.loop import TrainConfig, train
    from helpers import TRAIN_STEPS
    out = pipe["work"] / "draft-offline"
    if not (out / "model.safetensors").exists():
        tcfg = target_config(pipe["target"])
        fam = family_for_target(tcfg)
        samples = load_samples(pipe["regen"], Tokenizer(pipe["target"], fam), 1024, progress=False)
        feats = dump_features(pipe["target"], samples, pipe["work"] / "features", fam.default_aux_layer_ids(tcfg),
                              progress=False)
        train(TrainConfig(target=str(pipe["target"]), features=str(feats), output=str(out),
                          max_steps=TRAIN_STEPS[family], eval_every=TRAIN_STEPS[family] // 2,
                          save_every=TRAIN_STEPS[family], progress=False))
    return out


@pytest.fixture(scope="module", params=FAMILIES)
def served(request):
    family = request.param
    pipe = pipeline(family)
    target = pipe["target"]
    held = heldout_chats(pipe["heldout"])
    res = {"family": family, "target": target, "draft": pipe["online"]}

    llm = make_llm(target)
    res["base_tokens"], res["prompt_lens"] = _greedy(llm, family, held)
    res["base_heldout"], _ = _heldout(llm, held)
    shutdown(llm)

    dump = Path(tempfile.mkdtemp(prefix=f"eagle3-dump-{family}-"))
    os.environ["EAGLE3_PLUGIN_DUMP_DIR"] = str(dump)
    try:
        llm = make_llm(target, pipe["online"], k=K)
    finally:
        os.environ.pop("EAGLE3_PLUGIN_DUMP_DIR", None)
    res["probe_input"], res["probe_ids"] = _probe_one(llm, family)
    res["dump"] = dump
    before = spec_counters(llm)
    res["spec_tokens"], _ = _greedy(llm, family, held)
    after = spec_counters(llm)
    res["spec"] = {k: after[k] - before[k] for k in ("drafts", "draft_tokens", "accepted")}
    res["spec"]["per_pos"] = [a - b for a, b in zip(after["per_pos"], before["per_pos"] or [0] * K)]
    res["spec_heldout"], res["trained"] = _heldout(llm, held)
    shutdown(llm)

    llm = make_llm(target, pipe["untrained"], k=K)
    res["untrained_heldout"], res["untrained"] = _heldout(llm, held)
    shutdown(llm)

    if family in OFFLINE:
        llm = make_llm(target, _offline_draft(family, pipe), k=K)
        res["offline_heldout"], res["offline"] = _heldout(llm, held)
        shutdown(llm)

    ct = const_target(target, CACHE / f"const-{target.name}")
    cd = random_draft(target, CACHE / f"draft-const-published-{target.name}", const=True, published_layout=True)
    llm = make_llm(ct, cd, k=K)
    from vllm import SamplingParams
    llm.chat(chat_prompts(family, 2), SamplingParams(temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False)
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
    assert served["spec_heldout"] == served["base_heldout"]
    assert served["untrained_heldout"] == served["base_heldout"]
    if "offline_heldout" in served:
        assert served["offline_heldout"] == served["base_heldout"]


def test_trained_draft_accepts_far_more_than_an_untrained_one(served):
    t, u = served["trained"], served["untrained"]
    per_pos = [round(x / t["drafts"], 3) for x in t["per_pos"]]
    print(f"[{served['family']}] held-out acceptance length at k={K}: trained {t['al']:.2f} (per position "
          f"{per_pos}), untrained {u['al']:.2f}")
    assert t["al"] >= u["al"] + 0.8
    assert t["al"] >= (2.5 if served["family"] == "text" else 2.0)


def test_offline_training_matches_online(served):
    if served["family"] not in OFFLINE:
        assert "offline" not in served   # offline is exercised on one text and one image target (cost)
        return
    on, off = served["trained"]["al"], served["offline"]["al"]
    print(f"[{served['family']}] held-out acceptance length: online {on:.2f}, offline {off:.2f}")
    assert abs(on - off) <= 0.35


def test_spec_decode_metrics_present(served):
    s = served["spec"]
    assert s["drafts"] > 0 and s["draft_tokens"] == K * s["drafts"]
    assert len(s["per_pos"]) == K and 0 <= s["accepted"] <= s["draft_tokens"]
    assert s["per_pos"] == sorted(s["per_pos"], reverse=True)      # counts of drafts accepted up to position i
    assert sum(s["per_pos"]) == s["accepted"]


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
    ids = aux_layer_ids(json.loads((served["draft"] / "config.json").read_text()))
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
