#!/usr/bin/env python
"""Build the competent tiny targets shipped in eagle3_plugin/fixtures/targets/ (seeded; CPU; prints its run time).

  qwen3_vl-reader        the pipeline's tiny Qwen3-VL, every parameter trained to read one line of rendered text
  hunyuan_vl-reader      the pipeline's tiny HunyuanOCR, the same task (eagle3_plugin/devtools/reading.py)
  qwen2_audio-listener   the pipeline's tiny Qwen2-Audio with a 5 s window, trained to write down what espeak-ng
                         spells out (eagle3_plugin/devtools/listening.py; needs espeak-ng and sox)
Each one's held-out character accuracy is printed and stored in its competent_target.json.

    python scripts/build_competent_targets.py [--family qwen3_vl ...] [--steps N] [--out DIR]

The output folder is written next to its final place and moved in, so a failed build leaves the shipped one intact.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from eagle3_plugin.devtools import listening, reading  # noqa: E402


@dataclass(frozen=True)
class Competent:
    """What a family's competent target learns, from which tiny target, at what budget."""
    role: str                        # the fixture's suffix: qwen3_vl-reader, qwen2_audio-listener
    task: reading.Task
    steps: int
    pool_size: int = 0               # training examples made up front (0: each batch made anew)
    tiny: dict = field(default_factory=dict)


BUILDS = {"qwen3_vl": Competent("reader", reading.READING, 1500),
          "hunyuan_vl": Competent("reader", reading.READING, 1500),
          "qwen2_audio": Competent("listener", listening.LISTENING, 1500, pool_size=12000,
                                   tiny={"audio_seconds": listening.AUDIO_SECONDS})}


def _commit() -> str:
    run = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return run("rev-parse", "--short", "HEAD") + ("-dirty" if run("status", "--porcelain") else "")


def build_target(family: str, out_root: Path, steps: int | None, seed: int) -> dict:
    from eagle3_plugin.devtools.pipeline import PipelineConfig
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    build = BUILDS[family]
    task, steps = build.task, steps or build.steps
    t0 = time.perf_counter()
    base = cached_tiny_target(family, pretrain_steps=PipelineConfig.for_family(family, workdir="").pretrain_steps,
                              **build.tiny)
    name = f"{family}-{build.role}"
    final = out_root / name
    if final.exists() and not (final / "competent_target.json").exists():
        raise SystemExit(f"{final} exists and was not written by this script: move it away first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out_root))
    tmp.chmod(0o755)                # mkdtemp makes it private; the fixture is shipped
    try:
        recipe = reading.train_target(base, tmp, task, steps=steps, seed=seed, pool_size=build.pool_size)
        model = reading.load_model(task, tmp).eval()
        acc = reading.heldout_accuracy(model, reading.Batcher(tmp, task.media), task=task)
        info = {"task": f"{task.name} ({task.make.__module__})", "recipe": recipe,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "commit": _commit(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "heldout": {k: v for k, v in acc.items() if k != "examples"},
                "build_seconds": round(time.perf_counter() - t0, 1)}
        (tmp / "competent_target.json").write_text(json.dumps(info, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{name}: held-out exact {acc['exact']:.1%}, characters {acc['char_accuracy']:.1%} "
          f"({acc['texts']} texts); e.g. {acc['examples'][:4]}; {info['build_seconds']:.0f} s")
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", action="append", choices=list(BUILDS),
                   help="build only these (repeatable); default: all")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the family's, in BUILDS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "eagle3_plugin" / "fixtures" / "targets"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for family in args.family or BUILDS:
        build_target(family, out, args.steps, args.seed)
    print(f"built in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
