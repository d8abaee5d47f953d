"""Real vLLM CPU serving of every tiny target, without and with EAGLE-3 drafts written by eagle3-train, through our
entry point. Targets are tiny real checkpoints whose text stack was pretrained on the bundled corpus.

Per family, `pipeline()` runs the product's training path: prompts -> `eagle3-train regenerate` through `vllm serve`
-> online training. Then one engine at a time:
  1. the target alone             -> greedy tokens (the reference) for media chats, raw prompts and held-out prompts;
  2. target + the trained draft   -> the same greedy tokens (lossless), spec-decode counters, acceptance length on
                                     held-out prompts, and what vLLM handed the draft (EAGLE3_PLUGIN_DUMP_DIR);
     in the same engine, drafts swapped in by weight (helpers.DraftSwap, as the templates test proves equivalent):
     an untrained draft (the acceptance length training must clearly beat) and, for Qwen3-VL, a draft trained
     offline (dump-features, then train --features) on the same data.
Deterministic full-acceptance pairs, in our layout and the published one, are test_vllm_const_pairs.py.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from eagle3_plugin.families import FAMILIES as TABLE
from helpers import (CACHE, DRAFT_SWAP, chat_prompts, generate_inputs, heldout_chats, make_llm, pipeline, shutdown, spec_counters,
                     swap_draft, target_config)

FAMILIES = list(TABLE)
OFFLINE = ("qwen3_vl",)
MAX_TOKENS = 24
K = 3


def _greedy(llm, family, heldout):
    from vllm import SamplingParams
    sp = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    chats = llm.chat(chat_prompts(family, 4), sp, use_tqdm=False)
    gens = llm.generate(generate_inputs(family, llm.get_tokenizer(), 2), sp, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in chats + gens], [len(o.prompt_token_ids) for o in chats + gens]


def _heldout(llm, chats, label, k=None):
    """Greedy answers on held-out prompts, measured by the product's bench (vLLM's counters for exactly these
    requests, per-request histograms, latencies)."""
    from vllm import SamplingParams
    from eagle3_plugin.bench.vllm_offline import run_one
    return run_one(llm, chats, SamplingParams(temperature=0, max_tokens=48), label,
                   {"num_speculative_tokens": k} if k else {}, k)


def _one_at_a_time(llm, chats) -> list[list[int]]:
    """Greedy answers with each prompt alone in the engine (a batch of one image)."""
    from vllm import SamplingParams
    sp = SamplingParams(temperature=0, max_tokens=48)
    return [list(llm.chat([c], sp, use_tqdm=False)[0].outputs[0].token_ids) for c in chats]


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
    from eagle3_plugin.trainer.config import TrainConfig
    from eagle3_plugin.trainer.loop import train
    from eagle3_plugin.devtools.pipeline import BUDGET
    tcfg = target_config(pipe["target"])
    fam = family_for_target(tcfg)
    steps = BUDGET[fam.modality][1]
    out = pipe["work"] / "draft-offline"
    if not (out / "model.safetensors").exists():
        samples = load_samples(pipe["regen"], Tokenizer(pipe["target"], fam), 1024, progress=False)
        feats = dump_features(pipe["target"], samples, pipe["work"] / "features", fam.default_aux_layer_ids(tcfg),
                              progress=False)
        train(TrainConfig(target=str(pipe["target"]), features=str(feats), output=str(out),
                          max_steps=steps, eval_every=steps // 2, save_every=steps, progress=False))
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
    res["base_heldout"] = _heldout(llm, held, "baseline")
    if family == "hunyuan_vl":      # the Transformers backend: batched image encoding must not change the output
        res["one_at_a_time"] = _one_at_a_time(llm, held)
    shutdown(llm)

    dump = Path(tempfile.mkdtemp(prefix=f"eagle3-dump-{family}-"))
    os.environ["EAGLE3_PLUGIN_DUMP_DIR"] = str(dump)
    try:
        llm = make_llm(target, pipe["online"], k=K, worker_extension_cls=DRAFT_SWAP)
    finally:
        os.environ.pop("EAGLE3_PLUGIN_DUMP_DIR", None)
    try:
        res["probe_input"], res["probe_ids"] = _probe_one(llm, family)
        res["dump"] = dump
        before = spec_counters(llm)
        res["spec_tokens"], _ = _greedy(llm, family, held)
        after = spec_counters(llm)
        res["spec"] = {k: after[k] - before[k] for k in ("drafts", "draft_tokens", "accepted")}
        res["spec"]["per_pos"] = [a - b for a, b in zip(after["per_pos"], before["per_pos"] or [0] * K)]
        res["trained"] = _heldout(llm, held, f"trained k={K}", K)
        swap_draft(llm, pipe["untrained"])
        res["untrained"] = _heldout(llm, held, f"untrained k={K}", K)
        if family in OFFLINE:
            swap_draft(llm, _offline_draft(family, pipe))
            res["offline"] = _heldout(llm, held, f"offline-trained k={K}", K)
    finally:
        shutdown(llm)

    # the `eagle3-train bench` report of these runs (JSON / markdown / PNG)
    from eagle3_plugin.bench import report, summarise
    runs = [res[k] for k in ("base_heldout", "trained", "untrained", "offline") if k in res]
    res["report_dir"] = CACHE / f"bench-{family}"
    report.write({"engine": "vllm", "target": str(target), "draft": str(pipe["online"]), "prompts": len(held),
                  "settings": {"output_len": 48, "temperature": 0.0, "max_num_seqs": 4},
                  "runs": [summarise(r, runs[0], greedy=True) for r in runs]}, res["report_dir"])
    yield res


def test_served_without_speculation_with_media_prompt(served):
    assert len(served["base_tokens"]) == 6
    assert all(len(t) == MAX_TOKENS for t in served["base_tokens"])
    if served["family"] != "text":   # the media really expanded into the prompt
        assert min(served["prompt_lens"]) > 60


def test_eagle3_greedy_output_is_token_identical(served):
    assert served["spec_tokens"] == served["base_tokens"]
    base = served["base_heldout"].outputs
    assert len(base) >= 12 and all(len(t) > 0 for t in base)
    for key in ("trained", "untrained", "offline"):
        if key in served:
            assert served[key].outputs == base, f"{key} draft changed the greedy output"


def test_batched_serving_equals_one_request_at_a_time(served):
    """HunYuanVL runs on vLLM's Transformers backend, which mis-splits the features of several images encoded in one
    batch (patch counts vs merged tokens); our target class encodes them one by one. Without that, prompts served
    4 at a time answer differently from the same prompts served alone, and EAGLE-3 (which changes the batching)
    looks lossy."""
    if "one_at_a_time" not in served:
        return          # native vLLM models: batch independence is covered by the token-identity test
    assert served["one_at_a_time"] == served["base_heldout"].outputs


def test_trained_draft_accepts_far_more_than_an_untrained_one(served):
    t, u = served["trained"].spec, served["untrained"].spec
    al_t, al_u = t.acceptance_length(), u.acceptance_length()
    print(f"[{served['family']}] held-out acceptance length at k={K}: trained {al_t:.2f} (per position "
          f"{[round(x, 3) for x in t.acceptance_per_position()]}), untrained {al_u:.2f}")
    assert al_t >= al_u + 0.8
    assert al_t >= (2.5 if served["family"] == "text" else 2.0)


def test_bench_report_agrees_with_vllm_metrics(served):
    """The report's counts are vLLM's spec-decode counters, and they agree with vLLM's second, independent
    account of the same requests: the per-request acceptance histograms (RequestOutput spec_decode_metrics)."""
    import json
    d = served["report_dir"]
    rep = json.loads((d / "report.json").read_text())
    assert (d / "report.png").stat().st_size > 10_000 and "| trained k=3 |" in (d / "report.md").read_text()
    rows = {r["label"]: r for r in rep["runs"]}
    for label, run in (("trained k=3", served["trained"]), ("untrained k=3", served["untrained"])):
        c, r = run.spec, rows[label]
        assert r["counts"]["verifies"] == c.verifies > 0 and r["counts"]["accepted"] == c.accepted
        hist = r["counts"]["histogram"]
        assert sum(hist) == c.verifies, "per-request histograms count other verify steps than the engine counters"
        assert sum(j * n for j, n in enumerate(hist)) == c.accepted
        assert r["counts"]["per_pos"] == [sum(hist[i + 1:]) for i in range(K)]
        assert r["counts"]["proposed"] == K * c.verifies
        assert r["acceptance_length"] == pytest.approx(1 + c.accepted / c.verifies)
        assert r["lossless"] is True and r["speedup"] > 0


def test_offline_training_matches_online(served):
    if served["family"] not in OFFLINE:
        assert "offline" not in served   # offline features are exercised on the image target (cost)
        return
    on, off = served["trained"].spec.acceptance_length(), served["offline"].spec.acceptance_length()
    print(f"[{served['family']}] held-out acceptance length: online {on:.2f}, offline {off:.2f}")
    assert abs(on - off) <= 0.35


def test_spec_decode_metrics_present(served):
    s = served["spec"]
    assert s["drafts"] > 0 and s["draft_tokens"] == K * s["drafts"]
    assert len(s["per_pos"]) == K and 0 <= s["accepted"] <= s["draft_tokens"]
    assert s["per_pos"] == sorted(s["per_pos"], reverse=True)      # counts of drafts accepted up to position i
    assert sum(s["per_pos"]) == s["accepted"]


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
