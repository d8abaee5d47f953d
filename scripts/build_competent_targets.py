#!/usr/bin/env python
"""Build the competent tiny targets shipped in eagle3_plugin/fixtures/targets/ (seeded; CPU; prints its run time).

  qwen3_vl-reader   the pipeline's tiny Qwen3-VL, every parameter trained to read one line of rendered text
                    (eagle3_plugin/devtools/reading.py); held-out character accuracy printed and stored

    python scripts/build_competent_targets.py [--steps 800] [--out eagle3_plugin/fixtures/targets]

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


def _commit() -> str:
    run = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return run("rev-parse", "--short", "HEAD") + ("-dirty" if run("status", "--porcelain") else "")


def build_reader(out_root: Path, steps: int, seed: int) -> dict:
    from transformers import AutoModelForImageTextToText
    from eagle3_plugin.devtools import reading
    from eagle3_plugin.devtools.pipeline import PipelineConfig
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    t0 = time.perf_counter()
    base = cached_tiny_target("qwen3_vl", pretrain_steps=PipelineConfig.for_family("qwen3_vl", workdir="").pretrain_steps)
    final = out_root / "qwen3_vl-reader"
    if final.exists() and not (final / "competent_target.json").exists():
        raise SystemExit(f"{final} exists and was not written by this script: move it away first")
    tmp = Path(tempfile.mkdtemp(prefix=".qwen3_vl-reader.tmp-", dir=out_root))
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
    print(f"qwen3_vl-reader: held-out exact {acc['exact']:.1%}, characters {acc['char_accuracy']:.1%} "
          f"({acc['texts']} texts); e.g. {acc['examples'][:4]}; {info['build_seconds']:.0f} s")
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "eagle3_plugin" / "fixtures" / "targets"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    build_reader(out, args.steps, args.seed)
    print(f"built in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
