"""HunyuanOCR (HunYuanVLForConditionalGeneration) in SGLang, which has no model for it: our native port
(``model.py``: XD-RoPE text model, vision tower, processor, EAGLE-3 capture) registered as the model, its processor
and its multimodal architecture name. This module stays light: the port is imported only when SGLang imports its
model registry (the callbacks below)."""
from __future__ import annotations

from ...compat import Report
from ...families import FAMILIES
from ..registration import M_REGISTRY, registry_models

FAMILY = FAMILIES["hunyuan_vl"]
ARCH = FAMILY.hf_architectures[0]
OURS = __name__ + "."


def _register_model(registry_module, report: Report) -> None:
    name = f"target {ARCH}"
    models = registry_models(registry_module, report, name)
    if models is None:
        return
    existing = models.get(ARCH)
    if existing is not None and not getattr(existing, "__module__", "").startswith(OURS):
        return report.add(name, "native", f"SGLang ships {existing.__module__}.{existing.__name__}; not replaced")
    from .model import HunYuanVLForConditionalGeneration
    models[ARCH] = HunYuanVLForConditionalGeneration
    report.add(name, "registered", "native port (XD-RoPE, vision tower, EAGLE-3 capture)")


def _register_processor(mm_module, report: Report) -> None:
    name = f"processor {ARCH}"
    mapping = getattr(mm_module, "PROCESSOR_MAPPING", None)
    if not isinstance(mapping, dict):
        return report.add(name, "skipped", f"{mm_module.__name__} has no PROCESSOR_MAPPING dict")
    if any(k.__name__ == ARCH and not k.__module__.startswith(OURS) for k in mapping):
        return report.add(name, "native", "SGLang already has a processor for it")
    # keyed by our model class; SGLang matches processors by the class __name__ against config.architectures
    from .model import HunYuanVLForConditionalGeneration, HunYuanVLMultimodalProcessor
    mapping[HunYuanVLForConditionalGeneration] = HunYuanVLMultimodalProcessor
    report.add(name, "registered", "HunYuanVLMultimodalProcessor")


def _register_mm_arch(config_module, report: Report) -> None:
    name = f"multimodal arch {ARCH}"
    archs = getattr(config_module, "multimodal_model_archs", None)
    if not isinstance(archs, list):
        return report.add(name, "skipped", f"{config_module.__name__} has no multimodal_model_archs list")
    if ARCH not in archs:
        archs.append(ARCH)
    report.add(name, "registered")


ITEMS = (("sglang.srt.configs.model_config", f"multimodal arch {ARCH}", _register_mm_arch),
         (M_REGISTRY, f"target {ARCH}", _register_model),
         ("sglang.srt.managers.multimodal_processor", f"processor {ARCH}", _register_processor))
