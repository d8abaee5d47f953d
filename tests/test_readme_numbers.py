"""README figures are rendered from results files, not typed: the recipe block equals what
`benchmarks/recipes.py --table` renders from benchmarks/results/, the storage block what
`benchmarks/feature_storage.py --table` renders, the packing block what `benchmarks/packing.py --table` renders."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def test_recipe_table_matches_the_results_files():
    import recipes
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- recipes:begin -->\n", 1)[1].split("\n<!-- recipes:end -->", 1)[0]
    assert block.strip() == recipes.table().strip()
    assert "| ours |" in block   # the results files are there


def test_storage_block_matches_the_results_file():
    import feature_storage
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- storage:begin -->\n", 1)[1].split("\n<!-- storage:end -->", 1)[0]
    assert block.strip() == feature_storage.table().strip()
    assert "`--storage int8`" in block   # the results file is there


def test_packing_block_matches_the_results_file():
    import packing
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- packing:begin -->\n", 1)[1].split("\n<!-- packing:end -->", 1)[0]
    assert block.strip() == packing.table().strip()
    assert "packed / one-by-one" in block   # the results file is there


def test_streaming_block_matches_the_results_file():
    import streaming
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- streaming:begin -->\n", 1)[1].split("\n<!-- streaming:end -->", 1)[0]
    assert block.strip() == streaming.table().strip()
    assert "| streamed (now) |" in block   # the results file is there
