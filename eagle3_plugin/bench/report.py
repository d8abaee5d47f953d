"""Bench reports: report.json (every raw count, and the environment: engine, torch and plugin versions, device),
report.md (one row per configuration), report.png (acceptance per draft position, and speedup against its
acceptance-length bound, per configuration)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

ENGINE_PACKAGES = {"vllm": "vllm", "vllm-serve": "vllm", "sglang": "sglang"}


def _dist_version(name: str) -> str | None:
    import importlib.metadata as md
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict:
    """This machine's CPU and accelerators. GPU names come from nvidia-smi where it exists (no CUDA context is
    created in the bench process), else from torch."""
    info = {"type": "cpu", "cpu": _cpu_name(), "cpu_count": os.cpu_count()}
    try:
        import torch
        if not torch.cuda.is_available():
            return info
        info.update(type="rocm" if getattr(torch.version, "hip", None) else "cuda",
                    accelerator_count=torch.cuda.device_count(), cuda=torch.version.cuda, hip=torch.version.hip)
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout
            gpus = [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            gpus = []
        info["accelerators"] = gpus or [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as e:  # noqa: BLE001 - the report is written regardless
        info["error"] = f"{type(e).__name__}: {e}"
    return info


def environment(cfg, runs=()) -> dict:
    """What the numbers were measured with: the plugin, the engine (installed here, and what each HTTP server
    reported), torch, transformers, Python, and this machine's device."""
    import eagle3_plugin
    pkg = ENGINE_PACKAGES.get(cfg.engine, cfg.engine)
    servers = sorted({r.server_version for r in runs if getattr(r, "server_version", None)})
    env = {"plugin": eagle3_plugin.__version__,
           "engine": {"name": pkg, "installed": _dist_version(pkg), "server_reported": servers or None},
           "torch": _dist_version("torch"), "transformers": _dist_version("transformers"),
           "python": platform.python_version(), "platform": platform.platform(), "device": device_info()}
    if getattr(cfg, "url", None) or getattr(cfg, "baseline_url", None):
        env["note"] = ("device and installed versions are this machine's; the servers given by --url/--baseline-url "
                       "may run elsewhere (engine.server_reported is what they report)")
    return env


def environment_line(env: dict | None) -> str:
    if not env:
        return ""
    e, d = env["engine"], env["device"]
    engine = f"{e['name']} {e['installed'] or 'not installed here'}"
    if e.get("server_reported"):
        engine += f" (server: {', '.join(e['server_reported'])})"
    dev = ", ".join(d.get("accelerators") or []) or f"CPU {d.get('cpu')} ({d.get('cpu_count')} cores)"
    return f"{engine}, torch {env['torch']}, eagle3-plugin {env['plugin']}, device: {dev}"


SGLANG_NOTES = """\
Reading an SGLang tree sweep (steps x topk x draft_tokens):
- `topk` is not the tree width. Each step keeps the `topk` best leaves and expands each into `topk` children, so
  the candidate pool has topk + (steps-1)*topk^2 nodes; the tree verified is the best `draft_tokens - 1` of them by
  path probability (+ the root). A large topk fills that budget with shallow siblings and the tree gets shallower.
- `steps` is only the maximum depth: the real depth is whatever the `draft_tokens` budget reaches.
- Compare acceptance LENGTH across configurations, not acceptance rate: in tree mode the rate is
  accepted / (verifies * (draft_tokens - 1)), capped at steps / (draft_tokens - 1) (e.g. 5/15 = 0.33 for 5-4-16), so
  a bigger tree always "accepts less" while accepting more tokens per verify.
- On simple data prefer topk <= 3 and spend the token budget on depth; measure speedup, since a bigger tree costs
  verify time that acceptance length does not show.
"""


def _fmt(x, nd=2):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def markdown(rep: dict) -> str:
    lines = [f"# eagle3-train bench: {rep['engine']}", "",
             f"target `{rep['target']}`, draft `{rep['draft']}`, {rep['prompts']} prompts, "
             f"output_len {rep['settings']['output_len']}, temperature {rep['settings']['temperature']}, "
             f"max_num_seqs {rep['settings']['max_num_seqs']}", "",
             *([environment_line(rep.get("environment")), ""] if rep.get("environment") else []),
             "| config | accept len | accept rate | per position | tok/s | speedup (bound) | TTFT p50 s | "
             "TPOT mean ms | ITL mean ms | e2e p50 s | lossless |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["runs"]:
        per_pos = " / ".join(f"{p:.2f}" for p in r.get("acceptance_per_position") or []) or "-"
        sp = r.get("speedup")
        speed = "-" if sp is None else f"{sp:.2f}x ({_fmt(r.get('speedup_bound'))}x)"
        rate = r.get("acceptance_rate")
        cap = (r.get("counts") or {}).get("rate_cap")
        rate_s = _fmt(rate) + (f" (cap {cap:.2f})" if cap else "")
        lossless = {True: "yes", False: "NO", None: "-"}[r.get("lossless")]
        ms = lambda key: _fmt(None if (r.get(key) or {}).get("mean") is None else 1e3 * r[key]["mean"])  # noqa: E731
        lines.append(f"| {r['label']} | {_fmt(r.get('acceptance_length'))} | {rate_s} | {per_pos} | "
                     f"{r['tokens_per_s']:.1f} | {speed} | {_fmt(r['prefill_latency_s'].get('p50'), 3)} | "
                     f"{ms('tpot_s')} | {ms('itl_s')} | {_fmt(r['e2e_latency_s'].get('p50'), 3)} | {lossless} |")
    lines += ["", "speedup = output tokens/s with the draft / without; its bound is the acceptance length (a free "
                  "draft, verify as cheap as one decode step)."]
    notes = {f"{k}: {v}" for r in rep["runs"] for k, v in (r.get("latency_notes") or {}).items()}
    lines += [""] + [f"- {n}" for n in sorted(notes)] if notes else []
    from . import lossless_failures
    failures = lossless_failures(rep)
    lines += [""] + [f"**{m}**" for m in failures] if failures else []
    for r in rep["runs"]:
        if r.get("trainer_sim_al"):
            verdict = ("TRAIN/SERVE MISMATCH: the engine accepts far from what the trainer measured; check the chat "
                       "template and content format (`eagle3-train check --target T --data D`), the positions and the "
                       "engine version" if r["train_serve_mismatch"] else "consistent")
            lines.append(f"{r['label']}: engine acceptance length {r['acceptance_length']:.2f} vs the trainer's "
                         f"simulated {r['trainer_sim_al']:.2f} (gap {r['train_serve_gap']:.0%}): {verdict}")
    if rep["engine"] == "sglang" and len(rep["runs"]) > 2:
        lines += ["", SGLANG_NOTES]
    return "\n".join(lines) + "\n"


def draw_png(rep: dict, path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib not installed, no PNG (pip install matplotlib)")
        return None
    spec = [r for r in rep["runs"] if r.get("acceptance_per_position") is not None]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in spec:
        pp = r["acceptance_per_position"]
        a1.plot(range(1, len(pp) + 1), pp, marker="o", label=f"{r['label']} (AL {r['acceptance_length']:.2f})")
    a1.set(xlabel="draft position", ylabel="acceptance rate", title="acceptance per draft position", ylim=(0, 1.05))
    if spec:
        a1.set_xticks(range(1, max(len(r["acceptance_per_position"]) for r in spec) + 1))
        a1.legend(fontsize=8)
    labels = [r["label"] for r in spec]
    x = range(len(spec))
    a2.bar([i - 0.2 for i in x], [r.get("speedup") or 0 for r in spec], width=0.4, label="measured speedup")
    a2.bar([i + 0.2 for i in x], [r.get("acceptance_length") or 0 for r in spec], width=0.4, alpha=0.5,
           label="bound (acceptance length)")
    a2.axhline(1.0, color="k", lw=0.8)
    a2.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
    a2.set(ylabel="x over no speculation", title="speedup per configuration")
    a2.legend(fontsize=8)
    fig.suptitle(f"{rep['engine']}: {Path(str(rep['target'])).name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_tree_heatmap(rep: dict, path: Path) -> Path | None:
    """SGLang tree sweeps: acceptance length (and speedup) over steps x topk, one panel per draft_tokens (and
    concurrency), so the shape of the sweep is visible at a glance (seed 004's table as a picture)."""
    tree = [r for r in rep["runs"] if {"steps", "topk", "draft_tokens"} <= set(r.get("config") or {})
            and r.get("acceptance_length") is not None]
    steps = sorted({r["config"]["steps"] for r in tree})
    topks = sorted({r["config"]["topk"] for r in tree})
    if len(steps) * len(topks) < 2:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    panels = sorted({(r["config"]["draft_tokens"], r["config"].get("max_num_seqs", 1)) for r in tree})
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 + 0.9 * len(topks) * len(panels) + 1.5 * len(panels),
                                                      1.4 + 0.6 * len(steps)), squeeze=False)
    lo, hi = min(r["acceptance_length"] for r in tree), max(r["acceptance_length"] for r in tree)
    for ax, (n, seqs) in zip(axes[0], panels):
        grid = np.full((len(steps), len(topks)), np.nan)
        for r in tree:
            c = r["config"]
            if (c["draft_tokens"], c.get("max_num_seqs", 1)) == (n, seqs):
                i, j = steps.index(c["steps"]), topks.index(c["topk"])
                grid[i, j] = r["acceptance_length"]
                sp = r.get("speedup")
                ax.text(j, i, f"{r['acceptance_length']:.2f}" + (f"\n{sp:.2f}x" if sp else ""), ha="center",
                        va="center", fontsize=8)
        im = ax.imshow(grid, cmap="viridis", vmin=lo, vmax=hi, aspect="auto", origin="lower", alpha=0.8)
        ax.set_xticks(range(len(topks)), [str(t) for t in topks])
        ax.set_yticks(range(len(steps)), [str(s) for s in steps])
        ax.set(xlabel="topk", ylabel="steps", title=f"draft_tokens {n}" + (f", max_num_seqs {seqs}"
                                                                          if len(panels) > 1 else ""))
    fig.colorbar(im, ax=list(axes[0]), label="acceptance length")
    fig.suptitle(f"SGLang tree sweep: acceptance length (speedup): {Path(str(rep['target'])).name}", fontsize=10,
                 y=1.06)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write(rep: dict, out: Path, plot: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str) + "\n")
    md = markdown(rep)
    (out / "report.md").write_text(md)
    png = draw_png(rep, out / "report.png") if plot else None
    heat = draw_tree_heatmap(rep, out / "report-tree.png") if plot and png else None
    print(md)
    print(f"reports: {out / 'report.json'}, {out / 'report.md'}" + "".join(f", {p}" for p in (png, heat) if p))
    return rep
