#!/usr/bin/env python
"""Qwen3-VL drafts on vLLM's two model runners, measured side by side: the positions a runner hands the draft decide
what the draft must be trained on (families.py, with file:line). V1 hands it the target's M-RoPE rows, V2 (the GPU
default) the running index; for text after an image the two differ by the image's M-RoPE compression.

The real trainer (`train(TrainConfig(...))`) trains two drafts on the same image conversations, seed and steps:
`--vllm-runner v1` and `--vllm-runner v2`. Each draft is then scored by the trainer's own held-out evaluation
(simulated acceptance length at k = 3) under each runner's positions, which gives

  served as trained   v1 on V1, v2 on V2 (what the plugin serves: a draft refuses to load on the other runner)
  mismatched          v1 on V2 (what serving a V1-trained draft on the GPU default did before it refused) and v2 on V1

Served as trained, the V2 draft must reach at least 0.98 x the V1 draft's acceptance, averaged over --seeds seeds
(asserted by benchmarks/test_bench_runner_positions.py).

Target and data: the pipeline's pretrained tiny Qwen3-VL target and benchmarks/packing.py's image conversations (a
fixture image, a question, a corpus passage as the answer; held-out answers share no 12-word run with a training
answer, while images and questions repeat). The scores are the trainer's evaluation function over all held-out
conversations; the trainer's own end-of-run figure (also stored) leaves out held-out prompts that are training
prompts too, which here are most of them.

    python benchmarks/runner_positions.py [--steps 100] [--batch-size 8] [--results DIR]
    python benchmarks/runner_positions.py --table     # the README block, from benchmarks/results/runner-positions.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
RESULTS_NAME = "runner-positions.json"
RUNNERS = ("v1", "v2")
AL_BAR = 0.02                 # the V2 draft's held-out AL is at least 0.98 x the V1 draft's

sys.path.insert(0, str(HERE))
import gpu_train  # noqa: E402  (commit and versions)
import packing  # noqa: E402  (the target and the image conversations)


def heldout_al(target: Path, draft_dir: Path, held: Path, runner: str, batch_tokens: int, max_length: int) -> float:
    """The trainer's held-out simulated AL (k = 3) of a trained draft, fed the positions `runner` hands it."""
    import torch
    from eagle3_plugin.families import family_for_target
    from eagle3_plugin.models import model_config
    from eagle3_plugin.trainer.config import TrainConfig
    from eagle3_plugin.trainer.data import LoadReport
    from eagle3_plugin.trainer.draft import init_from_draft
    from eagle3_plugin.trainer.evaluate import evaluate, headline_al
    from eagle3_plugin.trainer.source import FeatureSource
    tcfg = model_config(target)
    fam = family_for_target(tcfg)
    cfg = TrainConfig(target=str(target), data=str(held), eval_data=str(held), output="", vllm_runner=runner,
                      batch_tokens=batch_tokens, max_length=max_length, render_check=0, data_workers=0,
                      progress=False)
    source = FeatureSource(cfg, fam, tcfg, torch.device("cpu"), LoadReport(), progress=False)
    embed, _ = source.embed_and_head()
    draft = init_from_draft(tcfg, embed, draft_dir, tuple(source.aux_ids), runner)
    return headline_al(evaluate(draft, source.eval_items, source, cfg))


def run(cache: Path, args) -> dict:
    from eagle3_plugin.trainer.config import TrainConfig
    target = packing.target_for("qwen3_vl", cache)
    work = cache / f"packing-{target.name}-{args.train}-{args.heldout}-{args.answer_words}-0"
    train_path, held_path = packing.image_conversations(work, args.train, args.heldout, args.answer_words, 0)
    lens = packing.lengths(target, train_path) + packing.lengths(target, held_path)
    max_length = max(lens)
    budget = args.batch_size * max_length
    seconds: dict[str, float] = {}
    per_seed = {trained: {served: [] for served in RUNNERS} for trained in RUNNERS}
    trainer_al = {runner: [] for runner in RUNNERS}
    from eagle3_plugin.trainer.loop import train
    for seed in range(args.seed, args.seed + args.seeds):
        drafts = {}
        for runner in RUNNERS:
            out = cache / f"runner-positions-{target.name}-{args.steps}-{args.batch_size}" / f"{runner}-seed{seed}"
            cfg = TrainConfig(target=str(target), data=str(train_path), eval_data=str(held_path), output=str(out),
                              max_steps=args.steps, batch_size=args.batch_size, batch_tokens=budget,
                              max_length=max_length, vllm_runner=runner, eval_every=args.steps,
                              save_every=args.steps, seed=seed, render_check=0, progress=False, overwrite=True)
            print(f"[runner-positions] seed {seed}: training for vLLM's {runner} runner, {args.steps} steps",
                  flush=True)
            t = time.perf_counter()
            trainer_al[runner].append(train(cfg)["best_eval_sim_al_k3"])
            seconds[f"train_{runner}_seed{seed}"] = round(time.perf_counter() - t, 1)
            drafts[runner] = out
        for trained in RUNNERS:
            for served in RUNNERS:
                per_seed[trained][served].append(
                    heldout_al(target, drafts[trained], held_path, served, budget, max_length))
    al = {t: {s: sum(v) / len(v) for s, v in row.items()} for t, row in per_seed.items()}
    v1, v2 = al["v1"]["v1"], al["v2"]["v2"]
    return {"target": str(target),
            "data": {**packing.overlap(train_path, held_path), "train": str(train_path), "heldout": str(held_path)},
            "config": {"steps": args.steps, "batch_size": args.batch_size, "seeds": args.seeds,
                       "batch_tokens": budget, "max_length": max_length},
            "heldout_al_k3": al, "heldout_al_k3_per_seed": per_seed, "trainer_heldout_al_k3": trainer_al,
            "served_as_trained": {"v1": v1, "v2": v2, "ratio": v2 / v1, "bar": 1 - AL_BAR, "met": v2 / v1 >= 1 - AL_BAR},
            "mismatch_loss": {"v1_draft_on_v2": al["v1"]["v2"] / v1 - 1, "v2_draft_on_v1": al["v2"]["v1"] / v2 - 1},
            "seconds": seconds}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=64, help="training conversations (default 64)")
    p.add_argument("--heldout", type=int, default=32, help="held-out conversations (default 32)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    p.add_argument("--batch-size", type=int, default=8, help="conversations per optimizer step (default 8)")
    p.add_argument("--answer-words", type=int, default=60, help="words per answer (default 60)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per runner, averaged (default 3)")
    p.add_argument("--cache", default=None, help="default: $EAGLE3_CACHE or ~/.cache/eagle3-plugin")
    p.add_argument("--results", default=None, help=f"folder for {RESULTS_NAME} (default: benchmarks/results)")
    args = p.parse_args(argv)
    cache = Path(args.cache or os.environ.get("EAGLE3_CACHE") or Path.home() / ".cache" / "eagle3-plugin")
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    res = {"date": started.isoformat(timespec="seconds"), "commit": gpu_train._git_commit(),
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
           "versions": gpu_train._versions(),
           "args": {k: v for k, v in vars(args).items() if k not in ("cache", "results")},
           **run(cache, args)}
    res["total_s"] = round(time.perf_counter() - t0, 1)
    results = Path(args.results) if args.results else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    (results / RESULTS_NAME).write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(table(results))
    return res


def table(results: Path | None = None) -> str:
    """The README's runner block, rendered from benchmarks/results/runner-positions.json."""
    d = json.loads(((results or RESULTS) / RESULTS_NAME).read_text())
    al, s, c = d["heldout_al_k3"], d["served_as_trained"], d["config"]
    rows = ["| draft trained with | served on vLLM's V1 runner | served on the V2 runner (GPU default) |",
            "|---|---|---|"]
    for trained in RUNNERS:
        cells = [f"**{al[trained][r]:.3f}**" if r == trained else f"{al[trained][r]:.3f} (refused to load)"
                 for r in RUNNERS]
        rows.append(f"| `--vllm-runner {trained}` | " + " | ".join(cells) + " |")
    rows += ["", f"Held-out simulated acceptance length at k = 3 (the trainer's evaluation, fed each runner's "
             f"positions) of two drafts for the tiny Qwen3-VL target, trained with the same {c['steps']} steps × "
             f"{c['batch_size']} image conversations, mean of {c['seeds']} seeds: served as trained, V2 / V1 = "
             f"**{s['ratio']:.3f}** (bar: ≥ {s['bar']:.2f}); a V1-trained draft fed V2's positions "
             f"(the mismatch the plugin now refuses) scores {d['mismatch_loss']['v1_draft_on_v2']:+.1%} "
             f"({d['data']['heldout_conversations']} held-out conversations whose answers share no "
             f"{d['data']['word_run']}-word run with a training answer; the images and questions are the fixtures' "
             f"and repeat; {d['date'][:10]}, commit {d['commit']}, {d['machine']['cpus']} CPUs; "
             f"`python benchmarks/runner_positions.py`)."]
    return "\n".join(rows)


if __name__ == "__main__" and sys.argv[1:] == ["--table"]:
    print(table())
elif __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
