"""README figures are rendered from results files, not typed: each measured block equals what its benchmark's
`table()` renders from benchmarks/results/ (scripts/render_readme.py writes them; its BLOCKS lists them)."""
import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from render_readme import BLOCKS, block  # noqa: E402


@pytest.mark.parametrize("marker", sorted(BLOCKS))
def test_readme_block_matches_its_results_file(marker):
    module, cell = BLOCKS[marker]
    got = block((REPO / "README.md").read_text(), marker)
    assert got.strip() == importlib.import_module(module).table().strip()
    assert cell in got
