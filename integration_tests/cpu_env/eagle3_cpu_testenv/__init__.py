"""TEST-ENVIRONMENT SCAFFOLDING for a CPU machine with no CPU build of torchvision. Never shipped to users.

PyPI only has CUDA builds of torchvision/torchaudio (they break ``import vllm`` on CPU torch), so the test venv has
none, and transformers 5.19 gates things behind torchvision that do not need it:
  1. ``VideoProcessorMixin`` is not exported, so every processor with a video sub-processor (Qwen3-VL) fails to
     construct: "VIDEO_PROCESSOR_MAPPING has no attribute '_extra_content'"; the auto video loader refuses to import.
  2. ``transformers.models.qwen2_vl.image_processing_qwen2_vl`` imports torchvision; vLLM's qwen3_vl.py imports
     ``smart_resize`` from it.
  3. ``HunYuanVLImageProcessorPil`` is decorated ``@requires(torchvision)`` though it never uses it, and
     ``transformers.models.hunyuan_vl.image_processing_hunyuan_vl`` imports torchvision; vLLM <= 0.28's native
     hunyuan_vision.py imports ``HunYuanVLImageProcessor`` and ``smart_resize`` from it.
This module is imported from a ``.pth`` file at interpreter start (so vLLM's spawned workers get it too) and only
installs import hooks; the fixes run when the affected transformers modules are first imported.
With a real torchvision installed it does nothing.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

_QWEN2VL_IMG = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
_VIDEO_PROCESSORS = {
    "Qwen3VLVideoProcessor": "transformers.models.qwen3_vl.video_processing_qwen3_vl",
    "Qwen2VLVideoProcessor": "transformers.models.qwen2_vl.video_processing_qwen2_vl",
}


class ShimAutoVideoProcessor:
    """Stands in for AutoVideoProcessor: instantiates the class named by ``video_processor_type``."""

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        from transformers import video_processing_utils as vpu
        kwargs.pop("trust_remote_code", None)
        cfg, _ = vpu.BaseVideoProcessor.get_video_processor_dict(path, **kwargs)
        name = cfg.get("video_processor_type") or "Qwen3VLVideoProcessor"
        return getattr(importlib.import_module(_VIDEO_PROCESSORS[name]), name).from_dict(cfg)


def _export_video_classes(pu) -> None:
    """Make transformers' class lookups find the video-processor base and the Qwen video processors."""
    from transformers import video_processing_utils as vpu
    for tm in {id(m): m for m in (pu.transformers_module, sys.modules.get("transformers")) if m}.values():
        if getattr(tm, "_eagle3_video_fix", False):
            continue
        tm.VideoProcessorMixin = vpu.VideoProcessorMixin
        tm.BaseVideoProcessor = vpu.BaseVideoProcessor
        for name, mod in _VIDEO_PROCESSORS.items():
            try:
                setattr(tm, name, getattr(importlib.import_module(mod), name))
            except Exception:
                pass
        tm._eagle3_video_fix = True


def _after_processing_utils(pu) -> None:
    # processing_utils is imported half-way through image_processing_utils, so importing the video module here
    # would be circular: export the classes on first use of the class lookup instead.
    pu._LazyAutoProcessorMapping._MAPPING_NAMES["video_processor"] = (__name__, "ShimAutoVideoProcessor")
    lookup = pu.ProcessorMixin.__dict__["get_possibly_dynamic_module"].__func__

    def get_possibly_dynamic_module(module_name):
        _export_video_classes(pu)
        return lookup(module_name)

    pu.ProcessorMixin.get_possibly_dynamic_module = staticmethod(get_possibly_dynamic_module)


def _after_hunyuan_vl(pkg) -> None:
    pil = importlib.import_module("transformers.models.hunyuan_vl.image_processing_pil_hunyuan_vl")
    cls = pil.__dict__["HunYuanVLImageProcessorPil"]
    real = sys.modules.get(pkg.__name__, pkg)
    for m in (pkg, real):
        m.HunYuanVLImageProcessorPil = cls
        m.HunYuanVLImageProcessor = cls


_POST_HOOKS = {"transformers.processing_utils": _after_processing_utils,
               "transformers.models.hunyuan_vl": _after_hunyuan_vl}


class _PostImportLoader(importlib.abc.Loader):
    def __init__(self, inner, hook):
        self.inner, self.hook = inner, hook

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        self.hook(sys.modules.get(module.__name__, module))


# torchvision-only image module -> (its PIL twin, which has smart_resize, the class name to alias)
_PIL_TWINS = {
    _QWEN2VL_IMG: ("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl", "Qwen2VLImageProcessor"),
    "transformers.models.hunyuan_vl.image_processing_hunyuan_vl":
        ("transformers.models.hunyuan_vl.image_processing_pil_hunyuan_vl", "HunYuanVLImageProcessor"),
}


class _AliasLoader(importlib.abc.Loader):
    """Serves a torchvision-only image module from its PIL twin."""

    def create_module(self, spec):
        twin, cls = _PIL_TWINS[spec.name]
        pil = importlib.import_module(twin)
        if not hasattr(pil, cls):
            setattr(pil, cls, getattr(pil, cls + "Pil"))
        return pil

    def exec_module(self, module):
        pass


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in _PIL_TWINS:
            return importlib.machinery.ModuleSpec(name, _AliasLoader())
        hook = _POST_HOOKS.get(name)
        if hook is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PostImportLoader(spec.loader, hook)
        return spec


def install() -> None:
    if importlib.util.find_spec("torchvision") is not None:
        return  # a real torchvision: nothing to fix
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
