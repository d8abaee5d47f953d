"""Side-by-side measurement in vLLM: the same prompts with and without an EAGLE-3 draft, in one run.

Reports greedy losslessness, mean acceptance length (1 + accepted / drafts, vLLM's own counters), acceptance rate
per draft position, output tokens/s and the wall-clock speedup. Engines run one after the other.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _llm(target, draft, k, family, max_num_seqs):
    from vllm import LLM
    from .launch import MEDIA_LIMITS
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    spec = {"method": "eagle3", "model": str(draft), "num_speculative_tokens": k} if draft else None
    return LLM(model=str(target), speculative_config=spec, max_model_len=2048, enforce_eager=True, dtype="bfloat16",
               max_num_seqs=max_num_seqs, disable_log_stats=False, seed=0, limit_mm_per_prompt=MEDIA_LIMITS[family])


def _counters(llm) -> dict:
    m = {x.name: x for x in llm.get_metrics()}
    val = lambda n: getattr(m.get(n), "value", 0) or 0  # noqa: E731
    per_pos = list(getattr(m.get("vllm:spec_decode_num_accepted_tokens_per_pos"), "values", []) or [])
    return {"drafts": val("vllm:spec_decode_num_drafts"), "draft_tokens": val("vllm:spec_decode_num_draft_tokens"),
            "accepted": val("vllm:spec_decode_num_accepted_tokens"), "per_pos": per_pos}


def compare_offline(target, draft, chats: list, k: int = 3, max_tokens: int = 64, max_num_seqs: int = 1,
                    repeats: int = 1) -> dict:
    """Run `chats` (OpenAI-style message lists) greedily without and with the draft; vLLM offline LLM."""
    from vllm import SamplingParams
    from .families import family_for_target
    family = family_for_target(json.loads((Path(target) / "config.json").read_text())).name
    sp = SamplingParams(temperature=0, max_tokens=max_tokens)
    res: dict = {"k": k, "prompts": len(chats), "max_tokens": max_tokens}
    for name, d in (("baseline", None), ("eagle3", draft)):
        llm = _llm(target, d, k, family, max_num_seqs)
        llm.chat(chats[:1], SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)      # warm-up
        before = _counters(llm)
        best = None
        for _ in range(repeats):
            t = time.perf_counter()
            outs = llm.chat(chats, sp, use_tqdm=False)
            wall = time.perf_counter() - t
            best = wall if best is None else min(best, wall)
        after = _counters(llm)
        toks = [list(o.outputs[0].token_ids) for o in outs]
        res[name] = {"wall_s": best, "output_tokens": sum(len(t) for t in toks),
                     "tokens_per_s": sum(len(t) for t in toks) / best, "tokens": toks}
        if d:
            c = {key: after[key] - before[key] for key in ("drafts", "draft_tokens", "accepted")}
            c["per_pos"] = [a - b for a, b in zip(after["per_pos"], before["per_pos"] or [0] * k)]
            res["counters"] = c
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001
            pass
        del llm
    c = res["counters"]
    res["lossless"] = res["baseline"]["tokens"] == res["eagle3"]["tokens"]
    res["acceptance_length"] = 1 + c["accepted"] / max(c["drafts"], 1)
    res["acceptance_per_position"] = [x / max(c["drafts"], 1) for x in c["per_pos"]]
    res["speedup"] = res["baseline"]["wall_s"] / res["eagle3"]["wall_s"]
    return res


def chats_from_jsonl(path) -> list[list[dict]]:
    """The first user turn of each conversation, as an OpenAI chat request with data-URI media."""
    from .trainer.data import read_jsonl
    from .trainer.regenerate import _request_messages
    return [_request_messages(c.messages[:1], c.media) for c in read_jsonl(path)]
