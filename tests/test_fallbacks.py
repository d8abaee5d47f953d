"""eagle3_plugin/fallbacks.py without an engine: one warning per cause, every occurrence counted, the count mirrored to
a record file another process (doctor) adds up. SGLang's real hook is exercised in
integration_tests/sglang/test_sglang_drafts.py."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from eagle3_plugin import fallbacks
from eagle3_plugin.fallbacks import SGLANG_DRAFT_INPUTS as KIND


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("EAGLE3_PLUGIN_STATE_DIR", str(tmp_path / "state"))
    fallbacks.reset()
    yield
    fallbacks.reset()


def _fail(kind_of_error):
    try:
        if kind_of_error == "type":
            list(None)
        raise KeyError("prefix_lens")
    except Exception as e:  # noqa: BLE001
        return e


def test_once_per_cause_counted_and_recorded(caplog, tmp_path):
    log = logging.getLogger("sglang.eagle3_plugin")
    with caplog.at_level(logging.WARNING, logger="sglang.eagle3_plugin"):
        assert fallbacks.record(KIND, _fail("type"), "preparing X", log) is True
        assert fallbacks.record(KIND, _fail("type"), "preparing X", log) is False     # same cause: counted only
        assert fallbacks.record(KIND, _fail("key"), "preparing X", log) is True       # another cause: logged
    assert [r.getMessage().split(":")[1].strip() for r in caplog.records] == ["preparing X failed"] * 2
    assert "TypeError: 'NoneType' object is not iterable (at test_fallbacks.py:" in caplog.records[0].getMessage()
    assert "Acceptance is lower when this happens" in caplog.records[0].getMessage()
    assert fallbacks.total(KIND) == 3
    fallbacks.flush()
    (rec,) = list((tmp_path / "state").glob("fallbacks-*.json"))
    counts = json.loads(rec.read_text())["fallbacks"][KIND.key]
    assert sorted(c["count"] for c in counts.values()) == [1, 2]
    lines = fallbacks.report_lines(KIND)
    assert lines[0] == f"SGLang draft input fallbacks: 3 ({KIND.consequence})"
    assert sum("this process:" in line for line in lines) == 2


def test_another_process_reads_the_record(tmp_path):
    """The engine's process records; a later `doctor` process (a fresh interpreter) reports it."""
    code = ("import logging; from eagle3_plugin import fallbacks as f\n"
            "try:\n    {}[1]\nexcept Exception as e:\n"
            "    [f.record(f.SGLANG_DRAFT_INPUTS, e, 'preparing X', logging.getLogger('x')) for _ in range(4)]\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)    # exits: atexit writes 4
    lines = fallbacks.report_lines(KIND)
    assert lines[0].startswith("SGLang draft input fallbacks: 4 (acceptance is lower"), lines
    assert "(ended, last written" in lines[1] and "KeyError: 1" in lines[1]


def test_state_dir_off_keeps_counts_in_memory(monkeypatch, tmp_path):
    monkeypatch.setenv("EAGLE3_PLUGIN_STATE_DIR", "off")
    fallbacks.record(KIND, _fail("key"), "preparing X", logging.getLogger("x"))
    fallbacks.flush()
    assert fallbacks.state_dir() is None and not (tmp_path / "state").exists()
    assert fallbacks.report_lines(KIND)[0].startswith("SGLang draft input fallbacks: 1 ")


def test_nothing_recorded():
    from eagle3_plugin.doctor import fallback_lines
    assert fallback_lines("sglang") == [f"SGLang draft input fallbacks: 0 (counted in this process and the records "
                                        f"in {fallbacks.state_dir()})"]
    assert fallback_lines("vllm") == []
