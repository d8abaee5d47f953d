"""Entry points are declared, discoverable, idempotent, and never raise into an engine that is missing or of the
wrong version: they log the reason and register nothing. Each case runs in a fresh interpreter."""
import importlib.metadata as md
import subprocess
import sys
import textwrap

import pytest


def run_py(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_entry_points_listed_in_both_groups():
    vllm_eps = {ep.name: ep.value for ep in md.entry_points(group="vllm.general_plugins")}
    sgl_eps = {ep.name: ep.value for ep in md.entry_points(group="sglang.srt.plugins")}
    assert vllm_eps.get("eagle3_plugin") == "eagle3_plugin.entry_points.vllm:register"
    assert sgl_eps.get("eagle3_plugin") == "eagle3_plugin.entry_points.sglang:register"
    scripts = {ep.name: ep.value for ep in md.entry_points(group="console_scripts")}
    assert scripts.get("eagle3-train") == "eagle3_plugin.entry_points.cli:main"


ENGINE_MISSING = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
sys.modules["{mod}"] = None            # makes `import {mod}` raise ImportError
from eagle3_plugin.entry_points.{ep} import register
register(); register()
import eagle3_plugin.{ep} as adapter
print("REPORT", [(i.name, i.status) for i in adapter.REPORT])
"""


def test_vllm_entry_point_with_vllm_missing_logs_and_returns():
    r = run_py(ENGINE_MISSING.format(mod="vllm", ep="vllm"))
    assert r.returncode == 0, r.stderr
    assert "vLLM is not importable" in r.stdout + r.stderr
    assert "REPORT [('vllm', 'skipped')]" in r.stdout


def test_sglang_entry_point_with_sglang_missing_logs_and_returns():
    r = run_py(ENGINE_MISSING.format(mod="sglang", ep="sglang"))
    assert r.returncode == 0, r.stderr
    assert "SGLang is not importable" in r.stdout + r.stderr
    assert "REPORT [('sglang', 'skipped')]" in r.stdout


WRONG_VERSION = """
import logging, sys, types
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
fake = types.ModuleType("{mod}"); fake.__version__ = "{version}"
sys.modules["{mod}"] = fake
from eagle3_plugin.entry_points.{ep} import register
register()
import eagle3_plugin.{ep} as adapter
print("REPORT", [(i.name, i.status, i.reason) for i in adapter.REPORT])
"""


def test_vllm_entry_point_with_unsupported_version_registers_nothing():
    r = run_py(WRONG_VERSION.format(mod="vllm", ep="vllm", version="0.11.0"))
    assert r.returncode == 0, r.stderr
    from eagle3_plugin.compat import SUPPORTED, TESTED
    lo, hi = SUPPORTED["vllm"]
    assert (f"vLLM 0.11.0 is outside the supported range >={lo},<{hi} (tested: {', '.join(TESTED['vllm'])})"
            in r.stdout + r.stderr)
    assert "REPORT [('vllm', 'skipped'" in r.stdout


def test_sglang_entry_point_with_unsupported_version_registers_nothing():
    r = run_py(WRONG_VERSION.format(mod="sglang", ep="sglang", version="0.4.10"))
    assert r.returncode == 0, r.stderr
    assert "SGLang 0.4.10 is outside the supported range" in r.stdout + r.stderr


@pytest.mark.parametrize("engine", ["vllm"])      # SGLang's declared range is its one tested release
def test_a_version_in_range_but_never_tested_is_named(engine):
    """Registration and `eagle3-train doctor` say when the engine's release is not one the matrix tested."""
    from packaging.version import Version
    from eagle3_plugin.compat import SUPPORTED, TESTED, untested_note
    lo, hi = SUPPORTED[engine]
    major, minor, *_ = Version(lo).release
    candidates = [f"{major}.{minor}.{p}" for p in range(1, 30)] + [f"{major}.{minor + m}.0" for m in range(1, 20)]
    version = next(v for v in candidates if Version(lo) <= Version(v) < Version(hi) and v not in TESTED[engine])
    assert untested_note(engine, TESTED[engine][0]) is None
    r = run_py(WRONG_VERSION.format(mod=engine, ep=engine, version=version))
    assert r.returncode == 0, r.stderr
    assert (f"{engine} {version} was never tested with this eagle3-plugin (tested: {', '.join(TESTED[engine])}"
            in r.stdout + r.stderr)


def test_vllm_entry_point_missing_internal_hook_registers_nothing():
    code = """
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    import vllm.model_executor.models.llama_eagle3 as le
    del le.Eagle3LlamaForCausalLM          # an engine version without the class we subclass
    from eagle3_plugin.entry_points.vllm import register
    register()
    import eagle3_plugin.vllm as adapter
    print("REPORT", [(i.name, i.status, i.reason) for i in adapter.REPORT])
    from vllm import ModelRegistry
    print("DRAFT_REGISTERED", "Eagle3Qwen2AudioForCausalLM" in ModelRegistry.get_supported_archs())
    """
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    assert "lacks Eagle3LlamaForCausalLM" in r.stdout
    assert "DRAFT_REGISTERED False" in r.stdout


def test_vllm_entry_point_registers_everything_once():
    code = """
    from eagle3_plugin.entry_points.vllm import register
    register(); register()
    import eagle3_plugin.vllm as adapter
    print("REPORT", sorted((i.name, i.status) for i in adapter.REPORT))
    from vllm import ModelRegistry
    archs = ModelRegistry.get_supported_archs()
    print("ARCHS", all(a in archs for a in ["Eagle3Qwen3VLForCausalLM", "Eagle3HunYuanVLForCausalLM",
                                              "Eagle3Qwen2AudioForCausalLM"]))
    """
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    assert "ARCHS True" in r.stdout
    for name in ("target Qwen2AudioForConditionalGeneration', 'registered",
                 "target HunYuanVLForConditionalGeneration', 'registered",
                 "draft Eagle3Qwen3VLForCausalLM', 'registered", "cpu-contiguous-gemm', 'registered"):
        assert name in r.stdout, r.stdout
    assert r.stdout.count("'registered'") == 6  # 3 drafts, 2 targets, cpu fix; idempotent: a second call adds nothing


def test_doctor_reports_versions_and_registrations():
    r = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "doctor", "--engine", "vllm"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "vllm: 0.32" in r.stdout and "entry points [vllm.general_plugins]: eagle3_plugin" in r.stdout
    for line in ("registered draft Eagle3Qwen2AudioForCausalLM", "registered target HunYuanVLForConditionalGeneration",
                 "native target Qwen3VLForConditionalGeneration"):
        assert line in " ".join(r.stdout.split()), r.stdout

