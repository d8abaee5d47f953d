"""TEST SCAFFOLDING (never shipped): fabricate ``torchvision.*`` / ``torchaudio.*`` modules so SGLang's Python code
imports on a CPU box. PyPI torchvision is a CUDA build (``operator torchvision::nms does not exist`` on CPU torch) and
SGLang imports it at module level. Every attribute is a dummy; calling anything raises.

Install it ONLY in the SGLang worker subprocesses (``sgl_worker.py``), never in the pytest process: transformers would
then believe torchvision exists, which breaks the vLLM tests.
"""
import enum
import importlib.abc
import importlib.machinery
import sys
import types


class _Dummy:
    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        raise RuntimeError("stubbed torchvision/torchaudio (CPU test environment)")

    def __getattr__(self, n):
        return _Dummy

    def __mro_entries__(self, bases):
        return (object,)


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        m = types.ModuleType(spec.name)
        m.__path__ = []
        if spec.name in ("torchvision", "torchaudio"):
            m.__version__ = "0.0.0+stub"

        def __getattr__(n, _m=m):
            if n.startswith("__"):
                raise AttributeError(n)
            return _InterpolationMode if n == "InterpolationMode" else _Dummy

        m.__getattr__ = __getattr__
        return m

    def exec_module(self, module):
        pass


class _Finder(importlib.abc.MetaPathFinder):
    PREFIXES = ("torchvision", "torchaudio")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.PREFIXES:
            return importlib.machinery.ModuleSpec(name, _Loader(), is_package=True)
        return None


def install():
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
