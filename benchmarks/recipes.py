#!/usr/bin/env python
"""Ours vs the anchors' recipe, side by side in one run: the same target, the same regenerated data and the same
budget (optimizer steps, one conversation per step), trained by eagle3-train with

  ours        lm_head started from the target's head rows, lr 1e-3, 20 warm-up steps, cosine, TTT 7 x 0.8^i
  classic     EAGLE / SpecForge / AngelSlim: lm_head from random, lr 1e-4, TTT 7 x 0.8^i
  short-ttt   speculators-like unroll: TTT 3, uniform step weights (lm_head from the target, lr 1e-3)

then served in vLLM on held-out prompts; prints the acceptance length (and per-position acceptance) of each.
The recipes are re-implemented as eagle3-train options: this measures the recipe choices, not the anchors' code.

    python benchmarks/recipes.py [--family text] [--steps 800]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

RECIPES = {
    "ours": {},
    "classic": {"lm_head_init": "random", "lr": 1e-4},
    "short-ttt": {"ttt_steps": 3, "ttt_decay": 1.0},
}


def main(argv=None) -> dict:
    from eagle3_plugin.families import FAMILIES
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--family", default="text", choices=list(FAMILIES))
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the pipeline's budget)")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--cache", default=None)
    args = p.parse_args(argv)

    from eagle3_plugin.bench import summarise
    from eagle3_plugin.bench.prompts import from_jsonl
    from eagle3_plugin.bench.vllm_offline import make_llm, run_one, shutdown
    from eagle3_plugin.devtools.pipeline import BUDGET, PipelineConfig, run_pipeline
    from eagle3_plugin.trainer.config import TrainConfig
    from eagle3_plugin.trainer.loop import train
    from vllm import SamplingParams

    cache = Path(args.cache or os.environ.get("EAGLE3_CACHE") or Path.home() / ".cache" / "eagle3-plugin")
    pipe = run_pipeline(PipelineConfig.for_family(args.family, workdir=str(cache / f"pipeline-{args.family}")),
                        cache_dir=str(cache))
    steps = args.steps or BUDGET[args.family][1]
    chats = from_jsonl(pipe["heldout"])
    sampling = SamplingParams(temperature=0, max_tokens=48)
    rows = {}
    llm = make_llm(pipe["target"], max_model_len=1024, max_num_seqs=4)
    base = run_one(llm, chats, sampling, "baseline", {}, None)
    shutdown(llm)
    for name in args.recipes:
        out = cache / f"recipe-{args.family}-{name}-{steps}"
        if not (out / "model.safetensors").exists():
            train(TrainConfig(target=str(pipe["target"]), data=str(pipe["regen"]), output=str(out), max_steps=steps,
                              eval_every=steps, save_every=steps, max_length=1024, progress=False, **RECIPES[name]))
        llm = make_llm(pipe["target"], out, k=args.k, max_model_len=1024, max_num_seqs=4)
        run = run_one(llm, chats, sampling, name, RECIPES[name], args.k)
        shutdown(llm)
        rows[name] = summarise(run, base, greedy=True)
    print(f"\n{args.family}: {steps} steps, {len(chats)} held-out prompts, k={args.k}")
    print(f"{'recipe':<10} {'accept len':>10}  per position        lossless")
    for name, r in rows.items():
        pp = " / ".join(f"{x:.2f}" for x in r["acceptance_per_position"])
        print(f"{name:<10} {r['acceptance_length']:>10.2f}  {pp:<18}  {r['lossless']}")
    if "ours" in rows and "classic" in rows:
        print(f"ours / classic acceptance length: {rows['ours']['acceptance_length'] / rows['classic']['acceptance_length']:.2f}x")
    (cache / f"recipes-{args.family}.json").write_text(json.dumps(rows, indent=1, default=str))
    return rows


if __name__ == "__main__":
    main()
