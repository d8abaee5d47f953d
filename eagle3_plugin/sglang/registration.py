"""What the SGLang plugin registers, each item checked against the SGLang internals it relies on.

Called by ``eagle3_plugin.sglang.register()`` (the ``sglang.srt.plugins`` entry point) after the version gate.
Nothing here imports SGLang's model registry or model code eagerly: each item is attached to the SGLang module it
patches and runs right after SGLang itself imports that module (or at once if it is already imported). So the
plugin never changes SGLang's import order, costs nothing in processes that never load models (detokenizer, DP
controller) and registers in every process that does (launcher / tokenizer manager, every scheduler).

  drafts     Eagle3Qwen3VLForCausalLM, Eagle3HunYuanVLForCausalLM, Eagle3Qwen2AudioForCausalLM -> ModelRegistry
             (subclasses of LlamaForCausalLMEagle3 that embed media placeholders as text, see drafts.py)
  worker     EagleDraftWorker._draft_extend_for_prefill wrapped so our drafts get the real placeholder ids on every
             prefill path (see drafts.wrap_draft_extend_for_prefill)
  targets    Qwen2AudioForConditionalGeneration + set_eagle3_layers_to_capture / get_embed_and_head
             (+ the audio encoder's padding mask, as transformers/vLLM apply it: the aux states depend on it)
             HunYuanVLForConditionalGeneration native port -> ModelRegistry, its processor -> PROCESSOR_MAPPING,
             its name -> multimodal_model_archs
             Qwen3VLForConditionalGeneration: native (reported only)
Everything is idempotent. Failures are recorded as "skipped" items and logged, never raised into SGLang.
"""
from __future__ import annotations

import importlib
import importlib.abc
import logging
import sys
import threading
from typing import Callable

from . import REPORT, Item

log = logging.getLogger("sglang.eagle3_plugin")

DRAFTS = ("Eagle3Qwen3VLForCausalLM", "Eagle3HunYuanVLForCausalLM", "Eagle3Qwen2AudioForCausalLM")
HUNYUAN = "HunYuanVLForConditionalGeneration"
QWEN2_AUDIO = "Qwen2AudioForConditionalGeneration"
QWEN3_VL = "Qwen3VLForConditionalGeneration"

M_REGISTRY = "sglang.srt.models.registry"
M_MM_PROC = "sglang.srt.managers.multimodal_processor"
M_MODEL_CONFIG = "sglang.srt.configs.model_config"
M_QWEN2_AUDIO = "sglang.srt.models.qwen2_audio"
M_QWEN3_VL = "sglang.srt.models.qwen3_vl"
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
        name = getattr(callback, "item_name", callback.__name__)
        _skip(name, f"{type(e).__name__}: {e}")
        log.exception("eagle3-plugin: registering %s failed", name)


def _report(name: str, status: str, reason: str = "") -> None:
    REPORT[:] = [i for i in REPORT if i.name != name]
    REPORT.append(Item(name, status, reason))
    if status == "skipped":
        log.warning("eagle3-plugin: %s not registered: %s", name, reason)
    else:
        log.info("eagle3-plugin: %s %s%s", name, status, f" ({reason})" if reason else "")


def _skip(name: str, reason: str) -> None:
    _report(name, "skipped", reason)


def _named(name: str):
    def deco(fn):
        fn.item_name = name
        return fn
    return deco


# ------------------------------------------------------------------------------------------ the items
@_named("drafts")
def _register_drafts(registry_module) -> None:
    registry = getattr(registry_module, "ModelRegistry", None)
    if registry is None or not isinstance(getattr(registry, "models", None), dict):
        return _skip("drafts", f"{M_REGISTRY} has no ModelRegistry.models dict")
    try:
        from sglang.srt.models.llama_eagle3 import LlamaForCausalLMEagle3  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return _skip("drafts", f"cannot import sglang.srt.models.llama_eagle3: {e}")
    from . import drafts
    for cls in drafts.DRAFT_CLASSES:
        registry.models[cls.__name__] = cls
        _report(f"draft {cls.__name__}", "registered", "LlamaForCausalLMEagle3 embedding placeholders as text")


@_named(f"target {HUNYUAN}")
def _register_hunyuan_model(registry_module) -> None:
    name = f"target {HUNYUAN}"
    registry = getattr(registry_module, "ModelRegistry", None)
    if registry is None or not isinstance(getattr(registry, "models", None), dict):
        return _skip(name, f"{M_REGISTRY} has no ModelRegistry.models dict")
    existing = registry.models.get(HUNYUAN)
    if existing is not None and not getattr(existing, "__module__", "").startswith("eagle3_plugin."):
        return _report(name, "native", f"SGLang ships {existing.__module__}.{existing.__name__}; not replaced")
    from . import hunyuan_vl
    registry.models[HUNYUAN] = hunyuan_vl.HunYuanVLForConditionalGeneration
    _report(name, "registered", "native port (XD-RoPE, vision tower, EAGLE-3 capture)")


@_named(f"processor {HUNYUAN}")
def _register_hunyuan_processor(mm_module) -> None:
    name = f"processor {HUNYUAN}"
    mapping = getattr(mm_module, "PROCESSOR_MAPPING", None)
    if not isinstance(mapping, dict):
        return _skip(name, f"{M_MM_PROC} has no PROCESSOR_MAPPING dict")
    if any(k.__name__ == HUNYUAN and not k.__module__.startswith("eagle3_plugin.") for k in mapping):
        return _report(name, "native", "SGLang already has a processor for it")
    # keyed by our model class; SGLang matches processors by the class __name__ against config.architectures
    from . import hunyuan_vl
    mapping[hunyuan_vl.HunYuanVLForConditionalGeneration] = hunyuan_vl.HunYuanVLMultimodalProcessor
    _report(name, "registered", "HunYuanVLMultimodalProcessor")


@_named(f"multimodal arch {HUNYUAN}")
def _register_mm_arch(config_module) -> None:
    name = f"multimodal arch {HUNYUAN}"
    archs = getattr(config_module, "multimodal_model_archs", None)
    if not isinstance(archs, list):
        return _skip(name, f"{M_MODEL_CONFIG} has no multimodal_model_archs list")
    if HUNYUAN not in archs:
        archs.append(HUNYUAN)
    _report(name, "registered")


@_named(f"target {QWEN2_AUDIO}")
def _patch_qwen2_audio(module) -> None:
    name = f"target {QWEN2_AUDIO}"
    cls = getattr(module, QWEN2_AUDIO, None)
    if cls is None:
        return _skip(name, f"{M_QWEN2_AUDIO} has no {QWEN2_AUDIO}")
    from sglang.srt.models.qwen2 import Qwen2ForCausalLM
    missing = [m for m in ("set_eagle3_layers_to_capture", "get_embed_and_head") if not hasattr(Qwen2ForCausalLM, m)]
    if missing:
        return _skip(name, f"its inner Qwen2ForCausalLM lacks {', '.join(missing)}")
    from . import qwen2_audio
    added = qwen2_audio.patch(cls)
    _report(name, "registered" if added else "native",
            f"added {', '.join(added)}" if added else "SGLang already implements the EAGLE-3 methods")


@_named(f"target {QWEN3_VL}")
def _check_qwen3_vl(module) -> None:
    name = f"target {QWEN3_VL}"
    cls = getattr(module, QWEN3_VL, None)
    if cls is not None and hasattr(cls, "set_eagle3_layers_to_capture") and hasattr(cls, "get_embed_and_head"):
        _report(name, "native", "SGLang implements EAGLE-3 capture")
    else:
        _skip(name, "SGLang's Qwen3-VL lacks set_eagle3_layers_to_capture / get_embed_and_head")


@_named("worker EagleDraftWorker._draft_extend_for_prefill")
def _wrap_worker(module) -> None:
    name = "worker EagleDraftWorker._draft_extend_for_prefill"
    cls = getattr(module, "EagleDraftWorker", None)
    fn = getattr(cls, "_draft_extend_for_prefill", None)
    if fn is None:
        return _skip(name, f"{M_EAGLE_WORKER}.EagleDraftWorker._draft_extend_for_prefill not found; our drafts "
                           f"still embed placeholders as text on the eager path")
    if getattr(fn, "__eagle3_plugin_wrapped__", False):
        return
    import inspect
    params = inspect.signature(fn).parameters
    if not {"self", "batch", "mm_input_embeds"} <= set(params):
        return _skip(name, f"unexpected signature {list(params)}")
    from .drafts import wrap_draft_extend_for_prefill
    cls._draft_extend_for_prefill = wrap_draft_extend_for_prefill(fn)
    _report(name, "registered", "placeholder ids restored for our drafts on every prefill path")


ITEMS = ((M_MODEL_CONFIG, _register_mm_arch), (M_QWEN2_AUDIO, _patch_qwen2_audio), (M_QWEN3_VL, _check_qwen3_vl),
         (M_REGISTRY, _register_drafts), (M_REGISTRY, _register_hunyuan_model),
         (M_MM_PROC, _register_hunyuan_processor), (M_EAGLE_WORKER, _wrap_worker))
WATCHED_MODULES = tuple(dict.fromkeys(m for m, _ in ITEMS))


def register(version: str) -> list[Item]:
    """Attach every item to its SGLang module. Returns the items known so far (the rest appear in
    ``eagle3_plugin.sglang.REPORT`` once SGLang imports the module they patch)."""
    for module, cb in ITEMS:
        after_import(module, cb)
    return []
