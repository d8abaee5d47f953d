"""What the SGLang plugin registers, each item checked against the SGLang internals it relies on.

Called by ``eagle3_plugin.sglang.register()`` (the ``sglang.srt.plugins`` entry point) after the version gate.
Nothing here imports SGLang's model registry or model code eagerly: each item is attached to the SGLang module it
patches and runs right after SGLang itself imports that module (or at once if it is already imported). So the
plugin never changes SGLang's import order, costs nothing in processes that never load models (detokenizer, DP
controller) and registers in every process that does (launcher / tokenizer manager, every scheduler).

  drafts     one per family in the table -> ModelRegistry (LlamaForCausalLMEagle3 subclasses that embed media
             placeholders as text, see drafts.py)
  worker     EagleDraftWorker._draft_extend_for_prefill wrapped so our drafts get the real placeholder ids on every
             prefill path (see drafts.wrap_draft_extend_for_prefill)
  families   each family module's ``ITEMS``: ((SGLang module, callback(module, report)), ...), e.g. a native target
             port, a processor, capture methods (``eagle3_plugin/sglang/<family>``)
Everything is idempotent. Failures are recorded as "skipped" items and logged, never raised into SGLang.
"""
from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
from typing import Callable

from ..compat import Report, family_module
from ..families import FAMILIES

M_REGISTRY = "sglang.srt.models.registry"
M_EAGLE_WORKER = "sglang.srt.speculative.eagle_worker_v2"


# ------------------------------------------------------------------------------------------ post-import hooks
class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs callbacks right after a watched module has been executed by a normal import."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callable]] = {}

    def find_spec(self, name, path=None, target=None):
        if name not in self.callbacks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _CallbackLoader(loader, self, name)
        return spec

    def fire(self, name: str, module) -> None:
        for cb in self.callbacks.pop(name, []):
            _run(cb, module)


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, loader, finder: _PostImportFinder, name: str) -> None:
        self._loader, self._finder, self._name = loader, finder, name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = self._loader        # the module keeps its real loader
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        self._finder.fire(self._name, module)

    def __getattr__(self, item):
        return getattr(self._loader, item)


_finder: _PostImportFinder | None = None
_lock = threading.Lock()


def after_import(module_name: str, callback: Callable) -> None:
    """Call ``callback(module)`` once ``module_name`` is imported (now, if it already is)."""
    global _finder
    with _lock:
        mod = sys.modules.get(module_name)
        if mod is None:
            if _finder is None:
                _finder = _PostImportFinder()
                sys.meta_path.insert(0, _finder)
            _finder.callbacks.setdefault(module_name, []).append(callback)
            return
    _run(callback, mod)


def _run(callback: Callable, module) -> None:
    try:
        callback(module)
    except Exception as e:  # noqa: BLE001 - never raise into SGLang's import machinery
        _REPORT.add(_ITEM_NAMES.get(callback, callback.__name__), "skipped", f"{type(e).__name__}: {e}")
        _REPORT.log.exception("eagle3-plugin: registering %s failed", _ITEM_NAMES.get(callback))


_REPORT: Report
_ITEM_NAMES: dict[Callable, str] = {}


# ------------------------------------------------------------------------------------------ the items
def registry_models(registry_module, report: Report, name: str) -> dict | None:
    """SGLang's ModelRegistry.models dict, or None (item `name` skipped) if this SGLang has none."""
    registry = getattr(registry_module, "ModelRegistry", None)
    if registry is None or not isinstance(getattr(registry, "models", None), dict):
        report.add(name, "skipped", f"{M_REGISTRY} has no ModelRegistry.models dict")
        return None
    return registry.models


def _register_drafts(registry_module, report: Report) -> None:
    models = registry_models(registry_module, report, "drafts")
    if models is None:
        return
    try:
        from . import drafts
    except Exception as e:  # noqa: BLE001
        return report.add("drafts", "skipped", f"cannot import sglang.srt.models.llama_eagle3: {e}")
    for fam in FAMILIES.values():
        if fam.has_engine_modules:
            models[fam.draft_architecture] = drafts.family_draft(fam)
            report.add(f"draft {fam.draft_architecture}", "registered",
                       "LlamaForCausalLMEagle3 embedding placeholders as text")


def _wrap_worker(module, report: Report) -> None:
    name = "worker EagleDraftWorker._draft_extend_for_prefill"
    cls = getattr(module, "EagleDraftWorker", None)
    fn = getattr(cls, "_draft_extend_for_prefill", None)
    if fn is None:
        return report.add(name, "skipped", f"{M_EAGLE_WORKER}.EagleDraftWorker._draft_extend_for_prefill not found; "
                                           f"our drafts still embed placeholders as text on the eager path")
    if getattr(fn, "__eagle3_plugin_wrapped__", False):
        return
    import inspect
    params = inspect.signature(fn).parameters
    if not {"self", "batch", "mm_input_embeds"} <= set(params):
        return report.add(name, "skipped", f"unexpected signature {list(params)}")
    from .drafts import wrap_draft_extend_for_prefill
    cls._draft_extend_for_prefill = wrap_draft_extend_for_prefill(fn)
    report.add(name, "registered", "placeholder ids restored for our drafts on every prefill path")


GENERIC_ITEMS = ((M_REGISTRY, "drafts", _register_drafts),
                 (M_EAGLE_WORKER, "worker EagleDraftWorker._draft_extend_for_prefill", _wrap_worker))


def _items(report: Report):
    """(SGLang module, item name, callback) for the generic items and every family module's ITEMS."""
    out = list(GENERIC_ITEMS)
    for fam in FAMILIES.values():
        if not fam.has_engine_modules:
            continue
        module, why = family_module("sglang", fam.name)
        if module is None:
            report.add(f"family {fam.name}", "skipped", why)
            continue
        out += list(module.ITEMS)
    return out


def watched_modules() -> tuple[str, ...]:
    return tuple(dict.fromkeys(m for m, _, _ in _items(_REPORT)))


def register(version: str, report: Report) -> None:
    """Attach every item to its SGLang module. Items fill ``report`` once SGLang imports the module they patch."""
    global _REPORT
    _REPORT = report
    for module, name, cb in _items(report):
        def attach(mod, _cb=cb):
            _cb(mod, report)
        _ITEM_NAMES[attach] = name
        after_import(module, attach)
