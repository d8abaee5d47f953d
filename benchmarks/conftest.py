"""pytest-benchmark suites for the hot paths we own. Fast mode (CI, the default): one timed round each.
Full mode: EAGLE3_BENCH_FULL=1 python -m pytest benchmarks  (several rounds, warm-up, longer inputs)."""
import os

import pytest

FULL = os.environ.get("EAGLE3_BENCH_FULL") == "1"
# the integration suite's CPU engine setting (a fixed 1 GiB KV cache instead of a share of a NUMA node), so a
# benchmark run on its own starts its engines as the full suite does
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture
def run(benchmark):
    """run(fn, *args): time fn with pytest-benchmark; 1 round in fast mode, 5 (+1 warm-up) in full mode."""
    def _run(fn, *args, **kwargs):
        return benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=5 if FULL else 1, iterations=1,
                                  warmup_rounds=1 if FULL else 0)
    return _run


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return os.environ.get("EAGLE3_CACHE") or str(tmp_path_factory.mktemp("cache"))
