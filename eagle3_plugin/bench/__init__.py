"""`eagle3-train bench`: the same prompts with and without an EAGLE-3 draft, measured side by side in one run.

Engines (one module each): ``vllm`` (offline ``LLM``), ``vllm-serve`` and ``sglang`` (OpenAI-compatible HTTP; we
launch one server per configuration, or use the ones you started with --url / --baseline-url).
Every run reports mean acceptance length, acceptance rate and acceptance per draft position, output tokens/s,
prefill and end-to-end latency, and the speedup over the baseline next to its bound (the acceptance length: a free
draft and a verify step as cheap as a decode step). A sweep is one run per configuration (vLLM
``num_speculative_tokens``; SGLang ``steps x topk x draft_tokens``). Reports: JSON (all raw counts), markdown, PNG.
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


def summarise(run: Run, baseline: Run | None, greedy: bool, draft: str | None = None) -> dict:
    """One report row: the raw counts and everything derived from them; with the draft folder, the trainer's own
    simulated acceptance length next to the engine's and their gap (over GAP_LIMIT: a train/serve mismatch)."""
    row = {"label": run.label, "config": run.config, "prompts": run.prompts, "output_tokens": run.output_tokens,
           "wall_s": run.wall_s, "tokens_per_s": run.tokens_per_s, "prefill_latency_s": _stats(run.prefill_s),
           "e2e_latency_s": _stats(run.e2e_s)}
    if run.spec is not None:
        s = run.spec
        row.update(counts=asdict(s), acceptance_length=s.acceptance_length(), acceptance_rate=s.acceptance_rate(),
                   acceptance_per_position=s.acceptance_per_position())
        sim = trainer_sim_al(draft, run.config.get("num_speculative_tokens"))
        if sim:
            gap = abs(s.acceptance_length() - sim) / sim
            row.update(trainer_sim_al=sim, train_serve_gap=gap, train_serve_mismatch=gap > GAP_LIMIT)
    if baseline is not None and run is not baseline:
        row["speedup"] = run.tokens_per_s / baseline.tokens_per_s if baseline.tokens_per_s else None
        row["speedup_bound"] = row.get("acceptance_length")
        if greedy:
            row["lossless"] = run.outputs == baseline.outputs
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
    max_num_seqs: int = 1
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
    baseline = next((r for r in runs if r.spec is None), None)
    greedy = cfg.temperature == 0
    rep = {"engine": cfg.engine, "target": cfg.target, "draft": cfg.draft, "settings": _settings(cfg),
           "prompts": len(chats), "runs": [summarise(r, baseline, greedy, cfg.draft) for r in runs]}
    report.write(rep, Path(cfg.output), plot=cfg.plot)
    return rep


def _settings(cfg: BenchConfig) -> dict:
    d = asdict(cfg)
    for k in ("output", "plot"):
        d.pop(k)
    return d
