"""SGLang adapter: registers our EAGLE-3 draft architectures and target support SGLang lacks.

Called from the ``sglang.srt.plugins`` entry point by SGLang's ``load_plugins()`` (launcher, engine, every scheduler).
SGLang only logs plugin exceptions, so silence is the failure mode: everything we skip is logged with its reason.
Each item is applied right after SGLang imports the module it patches (see registration.py), so ``REPORT`` fills in
as SGLang loads; ``full_report()`` imports those modules and returns the complete report (for ``doctor``).
Family-specific items live in one module per family, ``eagle3_plugin/sglang/<family>``, found from the family table.
"""
from __future__ import annotations

import importlib
import logging

from ..compat import Report, untested_note, version_problem

REPORT = Report("sglang", logging.getLogger("sglang.eagle3_plugin"))


def register() -> Report:
    if REPORT.done:
        return REPORT
    REPORT.done = True
    try:
        import sglang
    except Exception as e:  # noqa: BLE001
        return REPORT.refuse(f"SGLang is not importable: {e}")
    version = getattr(sglang, "__version__", "0")
    problem = version_problem("sglang", version)
    if problem:
        return REPORT.refuse(problem.replace("sglang ", "SGLang ", 1))
    note = untested_note("sglang", version)
    if note:
        REPORT.log.warning("eagle3-plugin: %s", note)
    from . import registration
    registration.register(version, REPORT)
    return REPORT


def full_report() -> Report:
    """register(), then import the SGLang modules our items attach to, so every item has run; the full REPORT."""
    register()
    if any(i.name == "sglang" for i in REPORT):      # version gate or import failed: nothing was attached
        return REPORT
    from . import registration
    for module in registration.watched_modules():
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001
            REPORT.add(module, "skipped", f"cannot import: {type(e).__name__}: {e}")
    return REPORT
