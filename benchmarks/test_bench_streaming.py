"""Streamed online data (benchmarks/streaming.py, fast mode): training on 10x the image conversations needs about
the same peak memory and start-up time; the all-in-memory load it replaced grows with the data set."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import run, table  # noqa: E402


def test_streamed_memory_and_startup_are_flat_in_data_size(tmp_path, cache):
    res = run(100, 1000, tmp_path, cache=cache, eager=False)
    print("\n" + table(res))
    ratio = res["ratio_large_over_small"]["stream"]
    assert ratio["peak_rss_mb"] < 1.15, res          # 10x the conversations, (almost) the same memory
    assert ratio["startup_s"] < 1.5, res
