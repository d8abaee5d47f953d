#!/usr/bin/env python
"""Build the competent tiny targets shipped in eagle3_plugin/fixtures/targets/ (seeded; CPU; prints its run time).

  qwen3_vl-reader     the pipeline's tiny Qwen3-VL, every parameter trained to read one line of rendered text
  hunyuan_vl-reader   the pipeline's tiny HunyuanOCR, the same task (eagle3_plugin/devtools/reading.py)
Each one's held-out character accuracy is printed and stored in its competent_target.json.

    python scripts/build_competent_targets.py [--family qwen3_vl ...] [--steps 1500] [--out DIR]

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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
READER_FAMILIES = ("qwen3_vl", "hunyuan_vl")


def _commit() -> str:
    run = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return run("rev-parse", "--short", "HEAD") + ("-dirty" if run("status", "--porcelain") else "")


def build_reader(family: str, out_root: Path, steps: int, seed: int) -> dict:
    from transformers import AutoModelForImageTextToText
    from eagle3_plugin.devtools import reading
    from eagle3_plugin.devtools.pipeline import PipelineConfig
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    t0 = time.perf_counter()
    base = cached_tiny_target(family, pretrain_steps=PipelineConfig.for_family(family, workdir="").pretrain_steps)
    final = out_root / f"{family}-reader"
    if final.exists() and not (final / "competent_target.json").exists():
        raise SystemExit(f"{final} exists and was not written by this script: move it away first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{family}-reader.tmp-", dir=out_root))
    tmp.chmod(0o755)                # mkdtemp makes it private; the fixture is shipped
    try:
        recipe = reading.train_reader(base, tmp, steps=steps, seed=seed)
        model = AutoModelForImageTextToText.from_pretrained(str(tmp)).float().eval()
        acc = reading.heldout_accuracy(model, reading.Batcher(tmp))
        info = {"task": "read one line of rendered text (eagle3_plugin/devtools/reading.py)", "recipe": recipe,
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
    print(f"{family}-reader: held-out exact {acc['exact']:.1%}, characters {acc['char_accuracy']:.1%} "
          f"({acc['texts']} texts); e.g. {acc['examples'][:4]}; {info['build_seconds']:.0f} s")
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", action="append", choices=READER_FAMILIES,
                   help="build only these (repeatable); default: all")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "eagle3_plugin" / "fixtures" / "targets"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for family in args.family or READER_FAMILIES:
        build_reader(family, out, args.steps, args.seed)
    print(f"built in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
