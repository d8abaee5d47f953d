"""The engine-version matrix (scripts/matrix.sh -> benchmarks/results/matrix.json) and what the plugin declares:
the tested releases are exactly those whose suites passed, the declared ranges run from the lowest to the highest
of them, and the report's failure and pin parsing is right."""
import json
import sys
from pathlib import Path

import pytest
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import matrix_report  # noqa: E402

from eagle3_plugin import compat  # noqa: E402


def _entries():
    return json.loads(matrix_report.RESULTS.read_text())["entries"]


def _passed(engine):
    return sorted((e["version"] for e in _entries() if e["engine"] == engine and e["status"] == "passed"), key=Version)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_tested_releases_are_the_ones_that_passed(engine):
    assert _passed(engine), f"no {engine} release passed the matrix"
    assert sorted(compat.TESTED[engine], key=Version) == _passed(engine)
    for e in _entries():
        if e["engine"] == engine and e["status"] == "passed":
            assert e["passed"] > 0 and e["failed"] == e["errors"] == 0 and e["suite"]


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_declared_range_is_what_passed(engine):
    """Every passed release registers; the release line below the lowest and the one above the highest do not."""
    passed = [Version(v) for v in _passed(engine)]
    for v in passed:
        assert compat.version_problem(engine, str(v)) is None
        assert compat.untested_note(engine, str(v)) is None
    lo, hi = passed[0], passed[-1]
    if engine == "vllm":      # vLLM releases are minor lines
        below, above = f"{lo.major}.{lo.minor - 1}.0", f"{hi.major}.{hi.minor + 1}.0"
    else:                     # SGLang's are patch releases of 0.5
        below, above = f"{lo.major}.{lo.minor}.{lo.micro - 1}", f"{hi.major}.{hi.minor}.{hi.micro + 1}"
    assert compat.version_problem(engine, below) is not None
    assert compat.version_problem(engine, above) is not None


def test_every_declared_engine_release_has_a_row():
    """The lowest release the README's range once promised stays in the file, with why it could not run here."""
    rows = {(e["engine"], e["version"]): e for e in _entries()}
    for engine, spec in matrix_report.ENGINES.items():
        for version in spec["versions"]:
            assert (engine, version) in rows, f"{engine} {version} is in scripts/matrix_report.py but never ran"
            r = rows[(engine, version)]
            assert r["status"] in ("passed", "failed", "not installable")
            if r["status"] == "not installable":
                assert r["reason"]


def test_failure_parsing_names_the_error(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text("""<testsuites><testsuite tests="3" failures="1" errors="1" skipped="0">
<testcase classname="integration_tests.test_x" name="test_ok"/>
<testcase classname="integration_tests.test_x" name="test_bad"><failure message="AssertionError: 1 != 2">
E   RuntimeError: Engine core initialization failed. See root cause above.
E   ValueError: 'qwen3_asr' is already used by a Transformers config</failure></testcase>
<testcase classname="integration_tests.test_x" name="test_err"><error message="boom"/></testcase>
</testsuite></testsuites>""")
    r = matrix_report.parse_junit(xml)
    assert (r["passed"], r["failed"], r["errors"]) == (1, 1, 1)
    assert r["first_failure"]["test"] == "integration_tests/test_x.py::test_bad"
    assert r["first_failure"]["message"] == "AssertionError: 1 != 2"
    log = ("x ERROR 12-02 [core.py:1] RuntimeError: Engine core initialization failed. See root cause above.\n"
           "x ERROR 12-02 [multiproc_executor.py:953] ValueError: Available memory on node 0 is less\n")
    assert matrix_report.error_line(log) == "ValueError: Available memory on node 0 is less"


def test_pins_read_the_linux_x86_requirement():
    reqs = ['transformers>=5.5.3', 'torch==2.13.0+cpu; platform_machine == "x86_64" or platform_machine == "s390x"',
            'torch==2.13.0; platform_system == "Darwin" or platform_machine == "ppc64le"', 'torch>=2; extra == "x"']
    assert matrix_report._pins(reqs) == {"transformers": ">=5.5.3", "torch": "==2.13.0+cpu"}
