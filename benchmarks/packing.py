#!/usr/bin/env python
"""Packing (`--batch-tokens`), measured side by side: the same target, conversations, seed, steps and batch size
(`--batch-size` conversations per optimizer step), trained twice by the real trainer
(`eagle3_plugin.trainer.loop.train(TrainConfig(...))`):

  one-by-one   batch_tokens = 0: one conversation per target forward and per draft step (the default)
  packed       batch_tokens = batch_size x max_length: a step's conversations grouped by length into padded target
               and draft forwards (trainer/batching.py); here max_length is the longest conversation of the data,
               so every step is one forward

Both evaluate on the same held-out conversations (`eval_data`, the trainer's own evaluation: simulated acceptance
length at k = 3, `headline_al`, once, after the last step). Loss and gradients of a packed forward equal the
one-by-one ones up to fp32 rounding (tests/test_batching.py), so the two drafts, and their acceptance lengths, must
match; what packing changes is the speed.

Training tokens/s is steady state: the real (unpadded) tokens of the steps after the first --warmup ones over their
wall time, from the end of step --warmup to the end of the last step (the timing probe of benchmarks/gpu_train.py,
which wraps the trainer's RunLog.step and batch_loss without changing them); the trainer's own running figure (the
progress bar's tokens/s, start-up of the loop included) is recorded next to it. Both runs train on exactly the same
tokens (same seed: the same conversations in the same steps), so the ratio is the ratio of step times. The training
process runs --threads torch threads (default 1; the 1-minute load average before and after each run is stored):
on a shared 2-core box, OpenMP threads of several processes waiting on each other made a 2-thread run 30x slower
than a 1-thread one, which says nothing about packing.

Targets (--families):
  text       the pipeline's pretrained tiny Qwen3 text target; conversations answered by the target itself (greedy,
             transformers generate) and held-out prompts that share no prompt or corpus sentence with the training
             ones: those of benchmarks/feature_storage.py (same cache folder, shared with it)
  qwen3_vl   the pipeline's pretrained tiny Qwen3-VL target; image conversations of benchmarks/gpu_train.py (a
             fixture image, a question, a corpus passage as the answer); held-out ones drawn with another seed and
             kept only when their answer shares no 12-word run with a training answer

    python benchmarks/packing.py [--families text qwen3_vl] [--steps 100] [--batch-size 8] [--results DIR]
    python benchmarks/packing.py --table      # the README block, from benchmarks/results/packing.json

Results: benchmarks/results/packing.json (with the date, commit and machine).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
RESULTS_NAME = "packing.json"
FAMILIES = ("text", "qwen3_vl")
MODES = ("one_by_one", "packed")
LABELS = {"text": "tiny Qwen3 text target", "qwen3_vl": "tiny Qwen3-VL target, image conversations"}
AL_MATCH = 0.01               # the two runs' held-out AL agree within 1 % relative (asserted by the test)
NGRAM = 12                    # held-out image answers share no 12-word run with a training answer (not 8: the
                              # corpus repeats its question/answer phrases, so nearly every passage shares an 8-word one)

sys.path.insert(0, str(HERE))
import feature_storage  # noqa: E402  (the text conversations and their held-out split)
import gpu_train  # noqa: E402  (the image conversations, the timing probe, the commit and versions)


# ------------------------------------------------------------------------------------------ targets and data
def target_for(family: str, cache: Path) -> Path:
    """The pipeline's pretrained tiny target (the one integration tests and the other benchmarks train on)."""
    from eagle3_plugin.devtools.pipeline import PipelineConfig
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    pc = PipelineConfig.for_family(family, workdir="")
    return cached_tiny_target(family, cache_dir=str(cache), pretrain_steps=pc.pretrain_steps)


def _answers(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            content = json.loads(line)["conversations"][-1]["content"]
            out.append(content if isinstance(content, str) else " ".join(p.get("text", "") for p in content))
    return out


def _ngrams(text: str) -> set[tuple[str, ...]]:
    w = text.split()
    return {tuple(w[i:i + NGRAM]) for i in range(len(w) - NGRAM + 1)}


def image_conversations(work: Path, n_train: int, n_heldout: int, answer_words: int,
                        image_side: int) -> tuple[Path, Path]:
    """WORK/data/train.jsonl and heldout.jsonl: gpu_train's image conversations (seed 0 for training; seed 99, a
    larger pool, for held-out ones, kept when their answer shares no 12-word run with any training answer)."""
    data = work / "data"
    train_path, held_path = data / "train.jsonl", data / "heldout.jsonl"
    if train_path.exists() and held_path.exists():
        return train_path, held_path
    gpu_train.write_conversations(train_path, n_train, answer_words, image_side, seed=0)
    seen = set().union(*(_ngrams(a) for a in _answers(train_path)))
    pool = gpu_train.write_conversations(data / "heldout-pool.jsonl", 20 * n_heldout, answer_words, image_side,
                                         seed=99)
    kept = [line for line, a in zip(pool.read_text().splitlines(), _answers(pool)) if not _ngrams(a) & seen]
    if len(kept) < n_heldout:
        raise SystemExit(f"only {len(kept)} held-out image conversations disjoint from the training ones")
    rows = [json.loads(line) for line in kept[:n_heldout]]
    for i, r in enumerate(rows):
        r["id"] = f"heldout-{i:05d}"
    held_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool.unlink()
    return train_path, held_path


def conversations(family: str, target: Path, cache: Path, args) -> tuple[Path, Path]:
    if family == "text":            # feature_storage.run_study's folder: the same conversations, made once
        work = cache / f"feature-storage-{target.name}-{args.train}-{args.heldout}-{args.max_new_tokens}"
        return feature_storage.conversations(target, work, args.train, args.heldout, args.max_new_tokens)
    work = cache / f"packing-{target.name}-{args.train}-{args.heldout}-{args.answer_words}-{args.image_side}"
    return image_conversations(work, args.train, args.heldout, args.answer_words, args.image_side)


def overlap(train_path: Path, held_path: Path) -> dict:
    """What the held-out conversations share with the training ones: prompts (text user turns; image ones reuse a
    few questions and images by design) and answers (a 12-word run in common)."""
    def prompts(p: Path) -> list[str]:
        return [json.dumps(json.loads(l)["conversations"][0]["content"]) for l in p.read_text().splitlines()
                if l.strip()]
    tr, ho = prompts(train_path), prompts(held_path)
    seen = set().union(*(_ngrams(a) for a in _answers(train_path)))
    return {"train_conversations": len(tr), "heldout_conversations": len(ho),
            "shared_prompts": len(set(tr) & set(ho)) if not any('"image"' in p for p in ho) else None,
            "word_run": NGRAM,
            "heldout_answers_sharing_a_word_run": sum(1 for a in _answers(held_path) if _ngrams(a) & seen)}


def lengths(target: Path, path: Path) -> list[int]:
    """Tokens per conversation, as the trainer encodes them (chat template, media expanded, no truncation)."""
    from eagle3_plugin.families import family_for_target
    from eagle3_plugin.models import model_config
    from eagle3_plugin.trainer.data import LoadReport, Tokenizer, load_samples
    fam = family_for_target(model_config(target))
    return [s.num_tokens for s in load_samples(path, Tokenizer(target, fam), 1 << 16, LoadReport(), progress=False)]


# ------------------------------------------------------------------------------------------ one run
@contextlib.contextmanager
def forwards():
    """Counts the micro-batches (target + draft forwards) of each optimizer step and their padded tokens (wrapping
    the loop's micro_batches; the evaluation's own calls are not counted)."""
    from eagle3_plugin.trainer import loop
    orig = loop.micro_batches
    seen = {"steps": 0, "forwards": 0, "padded_tokens": 0, "tokens": 0}

    def micro_batches(samples, batch_tokens):
        groups = orig(samples, batch_tokens)
        seen["steps"] += 1
        seen["forwards"] += len(groups)
        seen["padded_tokens"] += sum(len(g) * max(s.num_tokens for s in g) for g in groups)
        seen["tokens"] += sum(s.num_tokens for g in groups for s in g)
        return groups

    with mock.patch.object(loop, "micro_batches", micro_batches):
        yield seen


def train_once(cfg, warmup: int) -> dict:
    """One `train(cfg)` run, watched (gpu_train.Probe: step times and tokens; gpu_train.Memory: peak RSS growth)."""
    from eagle3_plugin.trainer.loop import train
    probe = gpu_train.Probe("cpu")
    load = os.getloadavg()[0]
    t = time.perf_counter()
    with gpu_train.Memory("cpu") as mem, probe.watch(), forwards() as fw:
        result = train(cfg)
    wall = time.perf_counter() - t
    figures = probe.training_figures(warmup)
    return {**figures, "wall_s": round(wall, 2), "peak_rss_growth_gib": mem.figures["peak_rss_growth_gib"],
            "load_average_1min": {"before": round(load, 2), "after": round(os.getloadavg()[0], 2)},
            "trained_steps": result["steps"], "heldout_sim_al_k3": result["best_eval_sim_al_k3"],
            "forwards_per_step": fw["forwards"] / max(1, fw["steps"]),
            "padding_share": 1 - fw["tokens"] / max(1, fw["padded_tokens"]),
            "padded_tokens": fw["padded_tokens"]}


def run_family(family: str, cache: Path, args) -> dict:
    from eagle3_plugin.trainer.config import TrainConfig
    times: dict[str, float] = {}
    t = time.perf_counter()
    target = target_for(family, cache)
    times["target"] = time.perf_counter() - t
    t = time.perf_counter()
    train_path, held_path = conversations(family, target, cache, args)
    times["conversations"] = time.perf_counter() - t
    train_lens, held_lens = lengths(target, train_path), lengths(target, held_path)
    max_length = max(train_lens + held_lens)           # nothing is cut, in either run
    budget = args.batch_size * max_length               # every step's conversations fit one forward
    work = cache / f"packing-runs-{family}"
    runs = {}
    for mode in MODES:
        cfg = TrainConfig(target=str(target), data=str(train_path), eval_data=str(held_path),
                          output=str(work / mode), max_steps=args.steps, batch_size=args.batch_size,
                          batch_tokens=budget if mode == "packed" else 0, max_length=max_length,
                          eval_every=args.steps, save_every=args.steps, seed=args.seed, render_check=0,
                          progress=False, overwrite=True)
        print(f"[packing] {family} {mode}: {args.steps} steps of {args.batch_size} conversations, "
              f"batch_tokens {cfg.batch_tokens}, max_length {max_length}", flush=True)
        t = time.perf_counter()
        runs[mode] = train_once(cfg, args.warmup)
        times[f"train_{mode}"] = time.perf_counter() - t
    one, packed = runs["one_by_one"], runs["packed"]
    if one["measured_tokens"] != packed["measured_tokens"]:
        raise SystemExit(f"{family}: the two runs trained on different tokens ({one['measured_tokens']} vs "
                         f"{packed['measured_tokens']}): not the same data and steps")
    al1, al2 = one["heldout_sim_al_k3"], packed["heldout_sim_al_k3"]
    return {
        "target": str(target), "label": LABELS[family],
        "data": {"train": str(train_path), "heldout": str(held_path), **overlap(train_path, held_path),
                 "train_tokens": sum(train_lens), "heldout_tokens": sum(held_lens),
                 "conversation_tokens": {"min": min(train_lens), "max": max(train_lens),
                                         "mean": round(sum(train_lens) / len(train_lens), 1)}},
        "config": {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "warmup": args.warmup,
                   "max_length": max_length, "batch_tokens": budget, "render_check": 0,
                   "recipe": "eagle3-train defaults (lr 1e-3, 20 warm-up steps, cosine, TTT 7 x 0.8^i)"},
        "runs": runs,
        "tokens_per_s_ratio": packed["tokens_per_s"] / one["tokens_per_s"],
        "trainer_tokens_per_s_ratio": packed["trainer_tokens_per_s"] / one["trainer_tokens_per_s"],
        "heldout_al_k3": {"one_by_one": al1, "packed": al2, "diff": al2 - al1, "relative_diff": al2 / al1 - 1,
                          "match_bar": AL_MATCH, "match": abs(al2 / al1 - 1) <= AL_MATCH},
        "seconds": {k: round(v, 1) for k, v in times.items()},
    }


# ------------------------------------------------------------------------------------------ report
def report(res: dict) -> str:
    lines = []
    for family, r in res["families"].items():
        c, d = r["config"], r["data"]
        lines.append(f"\n{family} ({r['label']}): {c['steps']} steps x {c['batch_size']} conversations, seed "
                     f"{c['seed']}, {d['train_conversations']} training conversations ({d['train_tokens']} tokens, "
                     f"{d['conversation_tokens']['min']}-{d['conversation_tokens']['max']} each), "
                     f"{d['heldout_conversations']} held-out; max_length {c['max_length']}, packed batch_tokens "
                     f"{c['batch_tokens']}")
        lines.append(f"{'':<14}{'tokens/s':>10}{'trainer tok/s':>15}{'ms/step':>9}{'fwd/step':>10}{'padding':>9}"
                     f"{'held-out AL k=3':>17}{'wall s':>8}")
        for mode in MODES:
            x = r["runs"][mode]
            lines.append(f"{mode:<14}{x['tokens_per_s']:>10.0f}{x['trainer_tokens_per_s']:>15.0f}"
                         f"{x['step_ms']:>9.0f}{x['forwards_per_step']:>10.1f}{x['padding_share']:>9.1%}"
                         f"{x['heldout_sim_al_k3']:>17.4f}{x['wall_s']:>8.1f}")
        al = r["heldout_al_k3"]
        lines.append(f"packed / one-by-one tokens/s: {r['tokens_per_s_ratio']:.2f}x (steady state after "
                     f"{c['warmup']} steps; trainer's running figure {r['trainer_tokens_per_s_ratio']:.2f}x); "
                     f"held-out AL difference {al['diff']:+.4f} ({al['relative_diff']:+.3%}; bar "
                     f"{AL_MATCH:.0%}: {'met' if al['match'] else 'NOT met'}); load average " + ", ".join(
                         f"{m} {r['runs'][m]['load_average_1min']['before']:.1f} -> "
                         f"{r['runs'][m]['load_average_1min']['after']:.1f}" for m in MODES))
    return "\n".join(lines)


def write(results_dir: Path, res: dict) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / RESULTS_NAME
    path.write_text(json.dumps(res, indent=1, default=str) + "\n")
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--train", type=int, default=64, help="training conversations (default 64)")
    p.add_argument("--heldout", type=int, default=32, help="held-out conversations (default 32)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    p.add_argument("--batch-size", type=int, default=8, help="conversations per optimizer step (default 8)")
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the steady-state tokens/s (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=96, help="text: length of the target's answers")
    p.add_argument("--answer-words", type=int, default=60, help="qwen3_vl: words per answer")
    p.add_argument("--image-side", type=int, default=0, help="qwen3_vl: long side of the images in px (0: the "
                                                             "fixtures' own size, 160-256 px)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the training process (default 1: on a shared box, several processes' "
                        "OpenMP threads waiting on each other slowed a 2-thread run 30x here; 0: torch's default)")
    p.add_argument("--cache", default=None, help="default: $EAGLE3_CACHE or ~/.cache/eagle3-plugin")
    p.add_argument("--results", default=None, help=f"folder for {RESULTS_NAME} (default: benchmarks/results, what "
                                                   f"the README renders)")
    args = p.parse_args(argv)
    if args.warmup >= args.steps:
        p.error("--warmup must be smaller than --steps")
    cache = Path(args.cache or os.environ.get("EAGLE3_CACHE") or Path.home() / ".cache" / "eagle3-plugin")
    import torch
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    try:
        families = {f: run_family(f, cache, args) for f in args.families}
    finally:
        torch.set_num_threads(threads)
    res = {"date": started.isoformat(timespec="seconds"), "commit": gpu_train._git_commit(),
           "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "cpus": os.cpu_count(), "torch_threads": args.threads or threads},
           "versions": gpu_train._versions(),
           "args": {k: v for k, v in vars(args).items() if k not in ("cache", "results")},
           "families": families, "total_s": round(time.perf_counter() - t0, 1)}
    path = write(Path(args.results) if args.results else RESULTS, res)
    print(report(res))
    print(f"results: {path}")
    return res


# ------------------------------------------------------------------------------------------ README block
def table(results: Path | None = None) -> str:
    """The README's packing block, rendered from benchmarks/results/packing.json."""
    d = json.loads(((results or RESULTS) / RESULTS_NAME).read_text())
    fams = d["families"]
    short = {"text": "text", "qwen3_vl": "Qwen3-VL"}
    lead = ("Packed, a step's conversations train at " + " and ".join(
        f"**{r['tokens_per_s_ratio']:.2f}×** ({short.get(f, f)})" for f, r in fams.items())
        + " the one-by-one tokens/s, at the same held-out acceptance length (" + "; ".join(
        f"{r['heldout_al_k3']['packed']:.3f} vs {r['heldout_al_k3']['one_by_one']:.3f}" for r in fams.values())
        + ").")
    rows = [lead, "", "| target | conversations per step | forwards per step, one-by-one → packed | training tokens/s, "
            "one-by-one | packed | packed / one-by-one | held-out sim AL (k = 3), one-by-one / packed |",
            "|---|---|---|---|---|---|---|"]
    notes = []
    for family, r in d["families"].items():
        one, packed, al, c = r["runs"]["one_by_one"], r["runs"]["packed"], r["heldout_al_k3"], r["config"]
        rows.append(f"| {r['label']} | {c['batch_size']} | {one['forwards_per_step']:.0f} → "
                    f"{packed['forwards_per_step']:.0f} | {one['tokens_per_s']:.0f} | {packed['tokens_per_s']:.0f} | "
                    f"**{r['tokens_per_s_ratio']:.2f}×** | {al['one_by_one']:.3f} / {al['packed']:.3f} "
                    f"({al['relative_diff']:+.2%}) |")
        d_ = r["data"]
        held = (f"{d_['heldout_conversations']} held-out sharing no prompt or corpus sentence with them (the target's "
                f"answers do repeat passages: {d_['heldout_answers_sharing_a_word_run']} share a {d_['word_run']}-word "
                f"run with a training answer)" if d_["shared_prompts"] is not None else
                f"{d_['heldout_conversations']} held-out whose answers share no {d_['word_run']}-word run with a "
                f"training answer")
        notes.append(f"{family}: {d_['train_conversations']} conversations of "
                     f"{d_['conversation_tokens']['min']}–{d_['conversation_tokens']['max']} tokens, {c['steps']} "
                     f"steps, `--batch-tokens {c['batch_tokens']}` (padding {packed['padding_share']:.1%}), {held}")
    steps = {r["config"]["warmup"] for r in d["families"].values()}
    rows.append("")
    rows.append(f"Packed: `--batch-tokens` = batch size × the longest conversation, so each step is one forward; "
                f"measured with the tiny targets on the CPU (not on a GPU); tokens/s: the steps after the first {', '.join(map(str, sorted(steps)))} over their wall "
                f"time ({'; '.join(notes)}; {d['date'][:10]}, commit {d['commit']}, {d['machine']['cpus']} CPUs, "
                f"{d['machine']['torch_threads']} torch thread{'s' if d['machine']['torch_threads'] != 1 else ''}; "
                f"`python benchmarks/packing.py`).")
    return "\n".join(rows)


if __name__ == "__main__" and sys.argv[1:] == ["--table"]:
    print(table())
elif __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
