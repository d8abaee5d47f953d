"""`eagle3-train bench`: the same prompts with and without an EAGLE-3 draft, measured side by side in one run.

Engines (one module each): ``vllm`` (offline ``LLM``), ``vllm-serve`` and ``sglang`` (OpenAI-compatible HTTP; we
launch one server per configuration, or use the ones you started with --url / --baseline-url).
Every run reports mean acceptance length, acceptance rate and acceptance per draft position, output tokens/s,
TTFT, TPOT, inter-token and end-to-end latency, and the speedup over the baseline next to its bound (the acceptance
length: a free draft and a verify step as cheap as a decode step). A sweep is one run per configuration (vLLM
``num_speculative_tokens``; SGLang ``steps x topk x draft_tokens``). Reports: JSON (all raw counts, and the versions
of the engine, torch and the plugin, and the device), markdown, PNG. Under greedy decoding every speculative run must
reproduce the baseline's outputs; ``lossless_failures`` names the first prompt and token where one does not (the
``bench`` command then exits with status 1).
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field


@dataclass
class SpecCounts:
    """Speculative-decoding counts of one run, in one shape for both engines (draft tokens exclude the bonus)."""
    verifies: int = 0                 # verify steps (vLLM num_drafts, SGLang spec_verify_ct)
    proposed: int = 0                 # draft tokens proposed
    accepted: int = 0                 # draft tokens accepted
    histogram: list[int] = field(default_factory=list)    # verify steps that accepted j draft tokens
    per_pos: list[int] = field(default_factory=list)      # verify steps whose first i+1 draft tokens were accepted
    source: str = ""                  # where the numbers come from (engine metric names)
    engine_reported_al: float | None = None               # the engine's own acceptance-length figure, if any
    rate_cap: float | None = None     # SGLang tree mode: the highest possible accept rate (steps / (tokens - 1))

    @staticmethod
    def per_pos_from_histogram(hist: list[int]) -> list[int]:
        return [sum(hist[i + 1:]) for i in range(max(len(hist) - 1, 0))]

    def acceptance_length(self) -> float:
        return 1.0 + self.accepted / self.verifies if self.verifies else 1.0

    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    def acceptance_per_position(self) -> list[float]:
        return [c / self.verifies for c in self.per_pos] if self.verifies else []


@dataclass
class Run:
    label: str
    config: dict                       # what differs between runs (e.g. {"num_speculative_tokens": 3})
    prompts: int
    output_tokens: int
    wall_s: float
    prefill_s: list[float]             # per request: time to first token
    e2e_s: list[float]                 # per request: end-to-end latency
    outputs: list = field(default_factory=list)     # per request: greedy token ids (or text over HTTP)
    spec: SpecCounts | None = None
    tpot_s: list[float] = field(default_factory=list)  # per request: (last token - first token) / (tokens - 1)
    itl_s: list[float] | None = None   # inter-token gaps, pooled over requests (None: not measured per token)
    itl_summary: dict | None = None    # where only an aggregate is known (vLLM offline: the engine's histogram)
    latency_notes: dict = field(default_factory=dict)  # metric -> how it was measured, or why it is null
    server_version: str | None = None  # what an HTTP server says it is (None: offline, or it does not say)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0


def _stats(xs: list[float]) -> dict:
    if not xs:
        return {}
    s = sorted(xs)
    return {"mean": statistics.fmean(s), "p50": s[len(s) // 2], "p90": s[min(len(s) - 1, int(0.9 * len(s)))]}


GAP_LIMIT = 0.10    # a larger gap between the trainer's simulated and the engine's acceptance length is a mismatch


def trainer_sim_al(draft: str | None, k: int | None) -> float | None:
    """The acceptance length the trainer simulated on its eval split at k = 3 (config.json's eagle3_plugin block)."""
    if not draft or k != 3:
        return None
    from pathlib import Path
    from eagle3_plugin.models import read_json
    cfg_path = Path(draft) / "config.json"
    if not cfg_path.is_file():
        return None
    return (read_json(cfg_path).get("eagle3_plugin") or {}).get("eval_sim_al_k3")


def prompt_text(chat) -> str:
    """A short name for a chat request: its last user turn's text, media parts as [image] / [audio] / [video]."""
    user = next((m for m in reversed(chat or []) if m.get("role") == "user"), None) or {}
    content = user.get("content", "")
    if isinstance(content, list):
        content = " ".join(p.get("text", "") if p.get("type") == "text"
                           else f"[{str(p.get('type', '')).removesuffix('_url')}]" for p in content)
    content = " ".join(str(content).split())
    return content if len(content) <= 80 else content[:77] + "..."


def first_difference(baseline_outputs: list, outputs: list, chats=None, decode=None) -> dict | None:
    """Where `outputs` first differ from `baseline_outputs` (per request: token ids, or text over HTTP): None if
    they are equal, else the request index (and its prompt), the first differing token (or character) and both
    sides there. `decode(token_ids) -> str` (optional) shows token ids as text."""
    for i in range(max(len(baseline_outputs), len(outputs))):
        a = baseline_outputs[i] if i < len(baseline_outputs) else None
        b = outputs[i] if i < len(outputs) else None
        if a == b:
            continue
        d = {"prompt_index": i, "prompts": max(len(baseline_outputs), len(outputs)),
             "prompt": prompt_text(chats[i]) if chats and i < len(chats) else None}
        if a is None or b is None:
            return {**d, "unit": None, "position": None,
                    "why": f"the {'speculative run' if b is None else 'baseline'} has no output for this prompt"}
        a, b = list(a) if not isinstance(a, str) else a, list(b) if not isinstance(b, str) else b
        j = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        end = "<end of output>"
        if isinstance(a, str):
            ctx = lambda t: (("..." if j > 20 else "") + t[max(0, j - 20):j + 20]) or end  # noqa: E731
            return {**d, "unit": "character", "position": j, "baseline": a[j] if j < len(a) else end,
                    "speculative": b[j] if j < len(b) else end, "baseline_context": ctx(a),
                    "speculative_context": ctx(b)}
        out = {**d, "unit": "token", "position": j, "baseline": a[j] if j < len(a) else end,
               "speculative": b[j] if j < len(b) else end}
        if decode is not None:
            try:
                out["baseline_text"] = decode([a[j]]) if j < len(a) else end
                out["speculative_text"] = decode([b[j]]) if j < len(b) else end
            except Exception:  # noqa: BLE001 - the ids are in the report either way
                pass
        return out
    return None


def mismatch_message(label: str, m: dict) -> str:
    """One line naming the run, the prompt and the first differing token of a greedy lossless failure."""
    where = f"prompt {m['prompt_index'] + 1} of {m['prompts']}" + (f" ({m['prompt']!r})" if m.get("prompt") else "")
    if m["unit"] is None:
        what = m["why"]
    elif m["unit"] == "token":
        show = lambda side: repr(m[side]) + (f" {m[side + '_text']!r}" if f"{side}_text" in m else "")  # noqa: E731
        what = (f"first at output token {m['position']}: baseline {show('baseline')} vs speculative "
                f"{show('speculative')}")
    else:
        what = (f"first at output character {m['position']} (the server returns text, not token ids): baseline "
                f"{m['baseline_context']!r} vs speculative {m['speculative_context']!r}")
    return (f"{label}: NOT LOSSLESS: under greedy decoding its output differs from the baseline's on {where}, "
            f"{what}")


def lossless_failures(rep: dict) -> list[str]:
    """One message per run whose greedy outputs differ from the baseline's (empty: all lossless, or not greedy)."""
    return [mismatch_message(r["label"], r.get("first_mismatch") or {"prompt_index": 0, "prompts": r["prompts"],
                                                                        "unit": None, "why": "outputs differ"})
            for r in rep["runs"] if r.get("lossless") is False]


def summarise(run: Run, baseline: Run | None, greedy: bool, draft: str | None = None, chats=None,
              decode=None) -> dict:
    """One report row: the raw counts and everything derived from them; with the draft folder, the trainer's own
    simulated acceptance length next to the engine's and their gap (over GAP_LIMIT: a train/serve mismatch).
    Under greedy decoding, `lossless` and (when False) `first_mismatch` (see first_difference; `chats` names the
    prompt, `decode` shows token ids as text)."""
    row = {"label": run.label, "config": run.config, "prompts": run.prompts, "output_tokens": run.output_tokens,
           "wall_s": run.wall_s, "tokens_per_s": run.tokens_per_s, "prefill_latency_s": _stats(run.prefill_s),
           "e2e_latency_s": _stats(run.e2e_s), "ttft_s": _stats(run.prefill_s) or None,
           "tpot_s": _stats(run.tpot_s) or None,
           "itl_s": _stats(run.itl_s) if run.itl_s else run.itl_summary,
           "latency_notes": dict(run.latency_notes)}
    for metric in ("ttft_s", "tpot_s", "itl_s"):
        if row[metric] is None and metric not in row["latency_notes"]:
            row["latency_notes"][metric] = "not measured (no timings came back)"
    if run.server_version:
        row["server_version"] = run.server_version
    if run.spec is not None:
        s = run.spec
        row.update(counts=asdict(s), acceptance_length=s.acceptance_length(), acceptance_rate=s.acceptance_rate(),
                   acceptance_per_position=s.acceptance_per_position())
        # The engines count draft tokens accepted past a stop (EOS, max_tokens) that never reach the output; on
        # answers of a few tokens that dominates. Output tokens after each request's first (prefill) token per
        # verify step is what the target forwards were worth.
        if s.verifies:
            row["delivered_tokens_per_verify"] = (run.output_tokens - run.prompts) / s.verifies
        sim = trainer_sim_al(draft, run.config.get("num_speculative_tokens"))
        if sim:
            gap = abs(s.acceptance_length() - sim) / sim
            row.update(trainer_sim_al=sim, train_serve_gap=gap, train_serve_mismatch=gap > GAP_LIMIT)
    if baseline is not None and run is not baseline:
        row["speedup"] = run.tokens_per_s / baseline.tokens_per_s if baseline.tokens_per_s else None
        row["speedup_bound"] = row.get("acceptance_length")
        if greedy:
            row["lossless"] = run.outputs == baseline.outputs
            if not row["lossless"]:
                row["first_mismatch"] = first_difference(baseline.outputs, run.outputs, chats, decode)
    return row


@dataclass
class BenchConfig:
    engine: str                        # "vllm" | "vllm-serve" | "sglang"
    target: str | None = None
    draft: str | None = None
    data: str | None = None
    dataset: str | None = None
    num_prompts: int = 16
    output_len: int = 128
    temperature: float = 0.0
    num_spec_tokens: list[int] = field(default_factory=lambda: [3])
    max_num_seqs: list[int] = field(default_factory=lambda: [1])    # concurrency sweep (one int: one value)
    tp: int = 1
    seed: int = 0
    repeats: int = 1
    max_model_len: int = 2048
    url: str | None = None             # a running server with the draft (vllm-serve / sglang)
    baseline_url: str | None = None    # a running server without it
    steps: list[int] = field(default_factory=lambda: [5])           # SGLang tree sweep
    topk: list[int] = field(default_factory=lambda: [4])
    draft_tokens: list[int] = field(default_factory=lambda: [16])
    server_cmd: str | None = None      # how to start an SGLang server (default: python -m sglang.launch_server)
    extra_args: list[str] = field(default_factory=list)               # passed to every launched server
    output: str = "bench-report"
    plot: bool = True

    def __post_init__(self):
        if isinstance(self.max_num_seqs, int):
            self.max_num_seqs = [self.max_num_seqs]
        self.max_num_seqs = [max(1, int(c)) for c in self.max_num_seqs]

    def concurrency(self) -> list[tuple[int, str]]:
        """(max_num_seqs, label suffix) per sweep value; a single value keeps the plain labels."""
        return [(c, f" @{c}" if len(self.max_num_seqs) > 1 else "") for c in self.max_num_seqs]


def run_bench(cfg: BenchConfig) -> dict:
    """Run every configuration (baseline first), write the reports, return the report dict."""
    import json
    from pathlib import Path

    from . import report
    from .prompts import load_prompts

    modality = "text"
    family = None
    if cfg.target and (Path(cfg.target) / "config.json").exists():
        from eagle3_plugin.families import family_for_target
        family = family_for_target(json.loads((Path(cfg.target) / "config.json").read_text()))
        modality = family.modality
    chats = load_prompts(modality, cfg.num_prompts, cfg.data, cfg.dataset, cfg.seed)
    if cfg.engine == "vllm":
        from .vllm_offline import run_all
    elif cfg.engine in ("vllm-serve", "sglang"):
        from .server import run_all
    else:
        raise SystemExit(f"unknown engine {cfg.engine!r}: choose vllm, vllm-serve or sglang")
    runs = run_all(cfg, chats, family.name if family else "text")
    baselines = {r.config.get("max_num_seqs"): r for r in runs if r.spec is None}   # one per concurrency
    baseline_of = lambda r: baselines.get(r.config.get("max_num_seqs"))            # noqa: E731
    greedy = cfg.temperature == 0
    decode = _decoder(cfg.target) if greedy and any(
        baseline_of(r) and r.outputs != baseline_of(r).outputs for r in runs) else None
    rep = {"engine": cfg.engine, "target": cfg.target, "draft": cfg.draft, "settings": _settings(cfg),
           "environment": report.environment(cfg, runs),     # after the runs: never touch a GPU before them
           "prompts": len(chats),
           "runs": [summarise(r, baseline_of(r), greedy, cfg.draft, chats, decode) for r in runs]}
    report.write(rep, Path(cfg.output), plot=cfg.plot)
    return rep


def _decoder(target: str | None):
    """token ids -> text with the target's tokenizer (for naming a lossless failure), or None."""
    if not target:
        return None
    try:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(target)
    except Exception:  # noqa: BLE001 - the report still has the token ids
        return None
    return lambda ids: tok.decode(ids)


def _settings(cfg: BenchConfig) -> dict:
    d = asdict(cfg)
    for k in ("output", "plot"):
        d.pop(k)
    return d
