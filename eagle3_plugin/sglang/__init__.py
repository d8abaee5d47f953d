"""SGLang adapter: registers our EAGLE-3 draft architectures and target support SGLang lacks.

Called from the ``sglang.srt.plugins`` entry point by SGLang's ``load_plugins()`` (launcher, engine, every scheduler).
SGLang only logs plugin exceptions, so silence is the failure mode: everything we skip is logged with its reason.
Each item is applied right after SGLang imports the module it patches (see registration.py), so ``REPORT`` fills in
as SGLang loads; ``full_report()`` imports those modules and returns the complete report (for ``doctor``).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

MIN_VERSION, MAX_VERSION = "0.5.14", "0.5.24"   # supported: MIN <= sglang < MAX

log = logging.getLogger("sglang.eagle3_plugin")


@dataclass
class Item:
    name: str
    status: str        # "registered" | "skipped" | "native"
    reason: str = ""


REPORT: list[Item] = []
_done = False


def _version_ok(v: str) -> bool:
    from packaging.version import Version
    return Version(MIN_VERSION) <= Version(Version(v).base_version) < Version(MAX_VERSION)


def register() -> list[Item]:
    global _done
    if _done:
        return REPORT
    _done = True
    try:
        import sglang
    except Exception as e:  # noqa: BLE001
        REPORT.append(Item("sglang", "skipped", f"SGLang is not importable: {e}"))
        log.warning("eagle3-plugin: %s; nothing registered", REPORT[-1].reason)
        return REPORT
    version = getattr(sglang, "__version__", "0")
    if not _version_ok(version):
        REPORT.append(Item("sglang", "skipped", f"SGLang {version} is outside the supported range "
                                                f">={MIN_VERSION},<{MAX_VERSION}"))
        log.warning("eagle3-plugin: %s; nothing registered", REPORT[-1].reason)
        return REPORT
    try:
        impl = importlib.import_module("eagle3_plugin.sglang.registration")
    except ModuleNotFoundError:
        REPORT.append(Item("sglang", "skipped", "SGLang support not built yet"))
        log.warning("eagle3-plugin: %s", REPORT[-1].reason)
        return REPORT
    REPORT.extend(impl.register(version))
    for item in REPORT:
        if item.status == "skipped":
            log.warning("eagle3-plugin: %s not registered: %s", item.name, item.reason)
    return REPORT


def full_report() -> list[Item]:
    """register(), then import the SGLang modules our items attach to, so every item has run; the full REPORT."""
    register()
    if any(i.name == "sglang" for i in REPORT):      # version gate or import failed: nothing was attached
        return REPORT
    try:
        impl = importlib.import_module("eagle3_plugin.sglang.registration")
    except ModuleNotFoundError:
        return REPORT
    for module in impl.WATCHED_MODULES:
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001
            REPORT.append(Item(module, "skipped", f"cannot import: {type(e).__name__}: {e}"))
    return REPORT
