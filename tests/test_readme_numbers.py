"""README figures are rendered from results files, not typed: each measured block equals what its benchmark's
`--table` renders from benchmarks/results/ (recipes, storage, packing, streaming, runners)."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

# README marker -> (benchmark module, a cell that shows its results file was there)
BLOCKS = {"recipes": ("recipes", "| ours |"), "storage": ("feature_storage", "`--storage int8`"),
          "packing": ("packing", "packed / one-by-one"), "streaming": ("streaming", "| streamed (now) |"),
          "runners": ("runner_positions", "| `--vllm-runner v2` |")}


@pytest.mark.parametrize("marker", sorted(BLOCKS))
def test_readme_block_matches_its_results_file(marker):
    import importlib
    module, cell = BLOCKS[marker]
    readme = (REPO / "README.md").read_text()
    block = readme.split(f"<!-- {marker}:begin -->\n", 1)[1].split(f"\n<!-- {marker}:end -->", 1)[0]
    assert block.strip() == importlib.import_module(module).table().strip()
    assert cell in block
