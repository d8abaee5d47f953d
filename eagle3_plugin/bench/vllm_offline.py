"""The vLLM engine of `eagle3-train bench`: offline ``LLM``, one engine per configuration, one after the other.

Counts come from vLLM itself, twice: the engine's spec-decode counters (``LLM.get_metrics()``: drafts, draft tokens,
accepted, accepted per position) and, where vLLM has them (>= 0.29), the per-request acceptance histograms
(``per_request_spec_decode_metrics``). Both are in the report, so a reader can check one against the other.
Code that builds an ``LLM`` must run under ``if __name__ == "__main__":`` (vLLM spawns its engine processes).
"""
from __future__ import annotations

import time

from . import Run, SpecCounts


def make_llm(target, draft=None, k: int = 3, **kw):
    """An offline engine with the target's media limits; CUDA graphs on GPUs, eager on vLLM's CPU backend."""
    from vllm import LLM
    from eagle3_plugin.families import family_for_target
    from eagle3_plugin.launch import on_cpu
    from eagle3_plugin.models import model_config
    limits = family_for_target(model_config(target)).engine_media_limits()
    spec = {"method": "eagle3", "model": str(draft), "num_speculative_tokens": k} if draft else None
    args = dict(model=str(target), speculative_config=spec, max_model_len=2048, enforce_eager=on_cpu(),
                dtype="bfloat16", disable_log_stats=False, seed=0, limit_mm_per_prompt=limits)
    if draft and _has_per_request_metrics():
        args["per_request_spec_decode_metrics"] = "summary"
    args.update(kw)
    return LLM(**args)


def _has_per_request_metrics() -> bool:
    from vllm.engine.arg_utils import EngineArgs
    return "per_request_spec_decode_metrics" in EngineArgs.__dataclass_fields__


def shutdown(llm) -> None:
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001 - best effort: the engine may already be gone
        pass
    import gc
    gc.collect()


def engine_counters(llm) -> dict:
    """vLLM's cumulative spec-decode counters for this engine (names without the Prometheus _total suffix)."""
    m = {x.name: x for x in llm.get_metrics()}
    val = lambda n: int(getattr(m.get(n), "value", 0) or 0)  # noqa: E731
    per_pos = [int(v) for v in (getattr(m.get("vllm:spec_decode_num_accepted_tokens_per_pos"), "values", None) or [])]
    return {"drafts": val("vllm:spec_decode_num_drafts"), "draft_tokens": val("vllm:spec_decode_num_draft_tokens"),
            "accepted": val("vllm:spec_decode_num_accepted_tokens"), "per_pos": per_pos}


def counts_between(before: dict, after: dict, k: int, outputs) -> SpecCounts:
    per_pos = [a - b for a, b in zip(after["per_pos"], before["per_pos"] or [0] * len(after["per_pos"]))]
    hist = [0] * (k + 1)
    for o in outputs:
        sdm = getattr(o.outputs[0], "spec_decode_metrics", None)
        for j, c in enumerate(getattr(sdm, "histogram", None) or ()):
            if j < len(hist):
                hist[j] += c
    return SpecCounts(verifies=after["drafts"] - before["drafts"], proposed=after["draft_tokens"] - before["draft_tokens"],
                      accepted=after["accepted"] - before["accepted"], per_pos=per_pos, histogram=hist,
                      source="vllm:spec_decode_* counters (LLM.get_metrics); histogram: per-request "
                             "spec_decode_metrics")


def _latencies(outputs) -> tuple[list[float], list[float], list[float]]:
    """Per request, from vLLM's engine-core timestamps: prefill (TTFT) = scheduled -> first token, e2e = scheduled ->
    last token (queueing excluded: offline, every prompt is submitted at once), TPOT = (last token - first token) /
    (output tokens - 1)."""
    prefill, e2e, tpot = [], [], []
    for o in outputs:
        m = getattr(o, "metrics", None)
        if m is None or not getattr(m, "scheduled_ts", 0):
            continue
        if getattr(m, "first_token_ts", 0):
            prefill.append(float(m.first_token_ts - m.scheduled_ts))
        if getattr(m, "last_token_ts", 0):
            e2e.append(float(m.last_token_ts - m.scheduled_ts))
        n = len(o.outputs[0].token_ids) if o.outputs else 0
        if getattr(m, "first_token_ts", 0) and getattr(m, "last_token_ts", 0) and n > 1:
            tpot.append(float(m.last_token_ts - m.first_token_ts) / (n - 1))
    return prefill, e2e, tpot


ITL_METRIC = "vllm:inter_token_latency_seconds"
LATENCY_NOTES = {
    "ttft_s": "engine side: the request scheduled -> its first token (queueing excluded: offline, every prompt is "
              "submitted at once)",
    "tpot_s": "engine side, per request: (last token - first token) / (output tokens - 1)",
    "itl_s": f"mean only, from vLLM's {ITL_METRIC} histogram (engine side, one gap per engine step, so with "
             f"speculative decoding one gap can cover several tokens); no percentiles: the offline LLM keeps no "
             f"per-token timestamps",
}


def itl_histogram(llm) -> tuple[float, int] | None:
    """(sum, count) of vLLM's inter-token-latency histogram for this engine, or None where it has none."""
    try:
        hs = [m for m in llm.get_metrics() if m.name == ITL_METRIC]
        if not hs:
            return None
        return float(sum(h.sum for h in hs)), int(sum(h.count for h in hs))
    except Exception:  # noqa: BLE001 - stats off, or another vLLM: the report says why the field is null
        return None


def itl_between(before, after) -> tuple[dict | None, str]:
    """The mean inter-token latency over a run from two itl_histogram snapshots, and the note for the report."""
    if before is None or after is None:
        return None, f"null: this vLLM reports no {ITL_METRIC} histogram to the offline LLM (get_metrics)"
    n = after[1] - before[1]
    if n <= 0:
        return None, "null: no inter-token gaps were recorded (every output has at most one token)"
    return {"mean": (after[0] - before[0]) / n, "p50": None, "p90": None, "count": n}, LATENCY_NOTES["itl_s"]


def run_one(llm, chats, sampling, label: str, config: dict, k: int | None, repeats: int = 1) -> Run:
    from vllm import SamplingParams
    llm.chat(chats[:1], SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)        # warm-up
    best = None
    for _ in range(max(1, repeats)):
        before = engine_counters(llm) if k else None
        itl_before = itl_histogram(llm)
        t = time.perf_counter()
        outs = llm.chat(chats, sampling, use_tqdm=False)
        wall = time.perf_counter() - t
        after = engine_counters(llm) if k else None
        itl = itl_between(itl_before, itl_histogram(llm))
        if best is None or wall < best[0]:
            best = (wall, outs, before, after, itl)
    wall, outs, before, after, (itl, itl_note) = best
    tokens = [list(o.outputs[0].token_ids) for o in outs]
    prefill, e2e, tpot = _latencies(outs)
    spec = counts_between(before, after, k, outs) if k else None
    return Run(label, config, len(chats), sum(len(t) for t in tokens), wall, prefill, e2e, tokens, spec,
               tpot_s=tpot, itl_summary=itl, latency_notes={**LATENCY_NOTES, "itl_s": itl_note})


def run_all(cfg, chats, family: str) -> list[Run]:
    """Per concurrency value: the baseline, then each k (one engine at a time)."""
    from vllm import SamplingParams
    sampling = SamplingParams(temperature=cfg.temperature, max_tokens=cfg.output_len, seed=cfg.seed)
    runs = []
    for seqs, suffix in cfg.concurrency():
        common = dict(max_num_seqs=seqs, tensor_parallel_size=cfg.tp, max_model_len=cfg.max_model_len, seed=cfg.seed)
        llm = make_llm(cfg.target, **common)
        runs.append(run_one(llm, chats, sampling, "baseline" + suffix, {"max_num_seqs": seqs}, None, cfg.repeats))
        shutdown(llm)
        for k in cfg.num_spec_tokens if cfg.draft else []:
            llm = make_llm(cfg.target, cfg.draft, k=k, **common)
            runs.append(run_one(llm, chats, sampling, f"k={k}{suffix}",
                                {"num_speculative_tokens": k, "max_num_seqs": seqs}, k, cfg.repeats))
            shutdown(llm)
    return runs
