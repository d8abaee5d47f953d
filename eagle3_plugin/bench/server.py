"""The HTTP engines of `eagle3-train bench`: ``vllm serve`` and SGLang, through their OpenAI-compatible chat API.

Each request is streamed, so the time to the first content chunk is the prefill latency the user sees (TTFT), and
the content chunks' arrival times give TPOT and the inter-token latency (LATENCY_NOTES). Counts:
  vLLM    the Prometheus counters ``vllm:spec_decode_*_total`` on /metrics, read before and after the run;
  SGLang  per-request ``sglext.spec_tokens_details`` (``return_spec_tokens_details``: verify count, correct and
          proposed drafts, the accepted-drafts histogram) summed over requests; /server_info's
          ``avg_spec_accept_length`` is kept as the engine's own figure.
Without --url we launch one server per configuration (baseline first) and stop it before the next one starts.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from . import Run, SpecCounts


def _get(url: str, timeout: float = 30.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def served_model(base_url: str) -> str:
    url = base_url.rstrip("/") + "/v1/models"
    try:
        return json.loads(_get(url))["data"][0]["id"]
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise SystemExit(f"bench: no OpenAI-compatible server answers at {url} ({e}); check --url / --baseline-url "
                         f"(the server root, without /v1)") from None


def prometheus_sum(text: str, name: str) -> float:
    """Sum of a Prometheus metric over its label sets."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def vllm_counters(base_url: str) -> dict:
    text = _get(base_url.rstrip("/") + "/metrics")
    per_pos, i = [], 0
    while f'position="{i}"' in text:
        per_pos.append(int(sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                               if l.startswith("vllm:spec_decode_num_accepted_tokens_per_pos_total")
                               and f'position="{i}"' in l)))
        i += 1
    return {"drafts": int(prometheus_sum(text, "vllm:spec_decode_num_drafts_total")),
            "draft_tokens": int(prometheus_sum(text, "vllm:spec_decode_num_draft_tokens_total")),
            "accepted": int(prometheus_sum(text, "vllm:spec_decode_num_accepted_tokens_total")), "per_pos": per_pos}


def stream_chat(base_url: str, model: str, messages, max_tokens: int, temperature: float, seed: int,
                sglang: bool, timeout: float = 600.0) -> dict:
    """One streamed chat completion: text, completion tokens, time to first token, e2e time, SGLang spec details."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
            "seed": seed, "stream": True, "stream_options": {"include_usage": True}}
    if sglang:
        body["return_spec_tokens_details"] = True
    req = urllib.request.Request(base_url.rstrip("/") + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    chunk_times = []          # arrival of each chunk that carries content
    text, usage, details = [], None, None
    with urllib.request.urlopen(req, timeout=timeout) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue          # blank keep-alives and named SSE events
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            chunk = json.loads(payload)
            now = time.perf_counter()
            got = False
            for ch in chunk.get("choices") or ():
                delta = (ch.get("delta") or {}).get("content")
                if delta:
                    got = True
                    text.append(delta)
            if got:
                chunk_times.append(now)
            usage = chunk.get("usage") or usage
            details = ((chunk.get("sglext") or {}).get("spec_tokens_details")) or details
    end = time.perf_counter()
    n = int((usage or {}).get("completion_tokens") or 0)
    first = chunk_times[0] if chunk_times else end
    return {"text": "".join(text), "completion_tokens": n, "ttft": first - t0, "e2e": end - t0, "spec": details,
            "tpot": (chunk_times[-1] - first) / (n - 1) if chunk_times and n > 1 else None,
            "itl": [b - a for a, b in zip(chunk_times, chunk_times[1:])]}


LATENCY_NOTES = {
    "ttft_s": "client side: request sent -> first content chunk (includes queueing and the network)",
    "tpot_s": "client side, per request: (last content chunk - first) / (completion tokens - 1)",
    "itl_s": "client side: gaps between consecutive streamed content chunks, pooled over requests; with speculative "
             "decoding one chunk can carry several tokens, so compare TPOT across configurations",
}


def server_version(base_url: str, sglang: bool) -> str | None:
    """What the server says it is: SGLang /server_info "version", vLLM /version."""
    try:
        if sglang:
            return json.loads(_get(base_url.rstrip("/") + "/server_info", timeout=10)).get("version")
        return json.loads(_get(base_url.rstrip("/") + "/version", timeout=10)).get("version")
    except Exception:  # noqa: BLE001 - older servers: no version in the report
        return None


def sglang_counts(results: list[dict], base_url: str, draft_tokens: int | None, steps: int | None) -> SpecCounts:
    c = SpecCounts(source="SGLang sglext.spec_tokens_details per request (summed); engine_reported_al: "
                          "/server_info internal_states[0].avg_spec_accept_length")
    for r in results:
        d = r["spec"] or {}
        c.verifies += int(d.get("spec_verify_ct") or 0)
        c.accepted += int(d.get("spec_num_correct_drafts") or 0)
        c.proposed += int(d.get("spec_num_proposed_drafts") or 0)
        for j, n in enumerate(d.get("spec_correct_drafts_histogram") or ()):
            if j >= len(c.histogram):
                c.histogram += [0] * (j + 1 - len(c.histogram))
            c.histogram[j] += int(n)
    if steps:
        c.histogram += [0] * max(0, steps + 1 - len(c.histogram))
    c.per_pos = SpecCounts.per_pos_from_histogram(c.histogram)
    if draft_tokens and steps and draft_tokens > 1:
        c.rate_cap = min(1.0, steps / (draft_tokens - 1))
    try:
        states = json.loads(_get(base_url.rstrip("/") + "/server_info")).get("internal_states") or [{}]
        c.engine_reported_al = states[0].get("avg_spec_accept_length")
    except Exception:  # noqa: BLE001 - older servers: keep the per-request counts
        pass
    return c


def measure(base_url: str, chats, cfg, label: str, config: dict, kind: str, spec: bool) -> Run:
    """The chats sent `config["max_num_seqs"]` at a time (the server's own limit when it was launched here)."""
    model = served_model(base_url)
    sglang = kind == "sglang"
    ask = lambda m: stream_chat(base_url, model, m, cfg.output_len, cfg.temperature, cfg.seed, sglang)  # noqa: E731
    ask(chats[0])                                                                                   # warm-up
    best = None
    for _ in range(max(1, cfg.repeats)):
        before = vllm_counters(base_url) if spec and not sglang else None
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=config.get("max_num_seqs", cfg.max_num_seqs[0])) as pool:
            results = list(pool.map(ask, chats))
        wall = time.perf_counter() - t
        after = vllm_counters(base_url) if spec and not sglang else None
        if best is None or wall < best[0]:
            best = (wall, results, before, after)
    wall, results, before, after = best
    counts = None
    if spec and sglang:
        counts = sglang_counts(results, base_url, config.get("draft_tokens"), config.get("steps"))
    elif spec:
        counts = SpecCounts(verifies=after["drafts"] - before["drafts"],
                            proposed=after["draft_tokens"] - before["draft_tokens"],
                            accepted=after["accepted"] - before["accepted"],
                            per_pos=[a - b for a, b in zip(after["per_pos"], before["per_pos"] or [0] * 64)],
                            source="vllm:spec_decode_*_total on /metrics")
    return Run(label, config, len(chats), sum(r["completion_tokens"] for r in results), wall,
               [r["ttft"] for r in results], [r["e2e"] for r in results], [r["text"] for r in results], counts,
               tpot_s=[r["tpot"] for r in results if r["tpot"] is not None],
               itl_s=[g for r in results for g in r["itl"]], latency_notes=dict(LATENCY_NOTES),
               server_version=server_version(base_url, sglang))


# ----------------------------------------------------------------------------------------------- launching
class SglangServer:
    """``python -m sglang.launch_server`` (or --server-cmd) with the EAGLE-3 flags, on a free loopback port."""

    def __init__(self, cfg, log, draft=None, steps=None, topk=None, draft_tokens=None, max_num_seqs=1):
        self.cfg, self.log_path, self.draft, self.max_num_seqs = cfg, log, draft, max_num_seqs
        self.steps, self.topk, self.draft_tokens = steps, topk, draft_tokens

    def command(self, port: int) -> list[str]:
        base = shlex.split(self.cfg.server_cmd) if self.cfg.server_cmd else [sys.executable, "-m",
                                                                             "sglang.launch_server"]
        cmd = base + ["--model-path", str(self.cfg.target), "--host", "127.0.0.1", "--port", str(port),
                      "--tp-size", str(self.cfg.tp), "--random-seed", str(self.cfg.seed),
                      "--max-running-requests", str(self.max_num_seqs),
                      "--context-length", str(self.cfg.max_model_len)]
        if self.draft:
            cmd += ["--speculative-algorithm", "EAGLE3", "--speculative-draft-model-path", str(self.draft),
                    "--speculative-num-steps", str(self.steps), "--speculative-eagle-topk", str(self.topk),
                    "--speculative-num-draft-tokens", str(self.draft_tokens)]
        return cmd + list(self.cfg.extra_args)

    def __enter__(self):
        from eagle3_plugin.launch import Subprocess, free_port
        port = free_port()
        self.proc = Subprocess(self.command(port), self.log_path, f"http://127.0.0.1:{port}/health").__enter__()
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.proc.__exit__(*exc)


def run_all(cfg, chats, family: str) -> list[Run]:
    from pathlib import Path
    kind = "sglang" if cfg.engine == "sglang" else "vllm"
    logs = Path(cfg.output) / "server-logs"
    runs = []
    for seqs, suffix in cfg.concurrency():
        runs += _runs_at(cfg, chats, kind, logs, seqs, suffix)
    return runs


def _runs_at(cfg, chats, kind: str, logs, seqs: int, suffix: str) -> list[Run]:
    """The baseline and every draft configuration at one concurrency (servers launched one at a time)."""
    from eagle3_plugin.launch import VllmServer
    at = {"max_num_seqs": seqs}
    runs = []
    if cfg.url or cfg.baseline_url:           # servers the user started: one configuration each
        if cfg.baseline_url:
            runs.append(measure(cfg.baseline_url, chats, cfg, "baseline" + suffix, at, kind, spec=False))
        if cfg.url:
            runs.append(measure(cfg.url, chats, cfg, "eagle3" + suffix, {"url": cfg.url, **at}, kind, spec=True))
        return runs
    if not cfg.target:
        raise SystemExit("give --target (and --draft) to launch servers, or --url / --baseline-url for running ones")
    if kind == "vllm":
        extra = ["--max-num-seqs", str(seqs), "--max-model-len", str(cfg.max_model_len),
                 "--tensor-parallel-size", str(cfg.tp), "--seed", str(cfg.seed)]
        configs = [("baseline", {}, None)] + ([(f"k={k}", {"num_speculative_tokens": k}, k)
                                               for k in cfg.num_spec_tokens] if cfg.draft else [])
        for label, config, k in configs:
            with VllmServer(cfg.target, logs / f"vllm-{label}{suffix.strip()}.log", draft=cfg.draft if k else None,
                            k=k or 0, extra=extra + list(cfg.extra_args)) as srv:
                runs.append(measure(srv.base_url.removesuffix("/v1"), chats, cfg, label + suffix, {**config, **at},
                                    kind, bool(k)))
        return runs
    configs = [("baseline", {}, None)]
    if cfg.draft:
        configs += [(f"{s}-{t}-{n}", {"steps": s, "topk": t, "draft_tokens": n}, (s, t, n))
                    for s in cfg.steps for t in cfg.topk for n in cfg.draft_tokens]
    for label, config, tree in configs:
        s, t, n = tree or (None, None, None)
        with SglangServer(cfg, logs / f"sglang-{label}{suffix.strip()}.log", cfg.draft if tree else None, s, t, n,
                          seqs) as srv:
            runs.append(measure(srv.base_url, chats, cfg, label + suffix, {**config, **at}, kind, bool(tree)))
    return runs
