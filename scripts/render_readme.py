"""Render every measured README block from its results file: between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
goes what that benchmark's `table()` renders from benchmarks/results/ (tests/test_readme_numbers.py checks they
agree).

    python scripts/render_readme.py            # rewrite README.md in place
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "scripts")]

# README marker -> (module with table(), a cell that shows its results file was there)
BLOCKS = {"recipes": ("recipes", "| ours |"), "storage": ("feature_storage", "`--storage int8`"),
          "packing": ("packing", "packed / one-by-one"), "streaming": ("streaming", "| streamed (now) |"),
          "runners": ("runner_positions", "| `--vllm-runner v2` |"), "matrix": ("matrix_report", "| **passed** |"),
          "speedup": ("speedup_cpu", "| EAGLE-3 k=3 |"),
          "readers": ("eagle3_plugin.devtools.reading", "| `hunyuan_vl-reader` |")}


def block(readme: str, marker: str) -> str:
    return readme.split(f"<!-- {marker}:begin -->\n", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]


def render(readme: str) -> str:
    for marker, (module, _) in BLOCKS.items():
        table = importlib.import_module(module).table().strip()
        head, rest = readme.split(f"<!-- {marker}:begin -->\n", 1)
        readme = f"{head}<!-- {marker}:begin -->\n{table}\n<!-- {marker}:end -->" + rest.split(
            f"<!-- {marker}:end -->", 1)[1]
    return readme


if __name__ == "__main__":
    path = REPO / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(render(path.read_text()))
    tmp.replace(path)
