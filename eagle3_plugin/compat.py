"""What both engine adapters share: the report of what was (not) registered, the version gate, and the checks of the
engine internals we rely on. An adapter never raises into its engine: every problem becomes a "skipped" item with
its reason, logged through the engine's logger and shown by ``eagle3-train doctor``."""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from packaging.version import Version

# Engine versions the plugin registers into: lowest supported <= version < first unsupported.
SUPPORTED = {"vllm": ("0.32", "0.33"), "sglang": ("0.5.23", "0.5.24")}
# The releases whose test suites passed (scripts/matrix.sh -> benchmarks/results/matrix.json; a test keeps the two
# equal): a version inside SUPPORTED but not here works by interpolation only, and `eagle3-train doctor` says so.
TESTED = {"vllm": ("0.32.0",), "sglang": ("0.5.23",)}


@dataclass
class Item:
    name: str
    status: str        # "registered" | "skipped" | "native"
    reason: str = ""


class Report(list):
    """The items an adapter registered or skipped, in order; adding an item with a known name replaces it."""

    def __init__(self, engine: str, log: logging.Logger):
        super().__init__()
        self.engine, self.log = engine, log
        self.done = False

    def add(self, name: str, status: str, reason: str = "") -> Item:
        self[:] = [i for i in self if i.name != name]
        item = Item(name, status, reason)
        self.append(item)
        if status == "skipped":
            self.log.warning("eagle3-plugin: %s not registered: %s", name, reason)
        else:
            self.log.debug("eagle3-plugin: %s %s%s", name, status, f" ({reason})" if reason else "")
        return item

    def refuse(self, reason: str) -> "Report":
        """Nothing is registered into this engine (the whole adapter is skipped)."""
        self.add(self.engine, "skipped", f"{reason}; nothing registered")
        return self


def base_version(v: str) -> Version:
    return Version(Version(v).base_version)


def version_problem(engine: str, version: str) -> str | None:
    """None if `version` is in the supported range of `engine`, else the reason."""
    lo, hi = SUPPORTED[engine]
    try:
        v = base_version(version)
    except Exception:  # noqa: BLE001 - an unparsable version is outside every range
        return f"{engine} version {version!r} cannot be parsed"
    if Version(lo) <= v < Version(hi):
        return None
    return (f"{engine} {version} is outside the supported range >={lo},<{hi} (tested: "
            f"{', '.join(TESTED[engine])})")


def untested_note(engine: str, version: str) -> str | None:
    """None if this release's tests passed (TESTED), else a note naming the ones that did."""
    try:
        v = base_version(version)
    except Exception:  # noqa: BLE001 - unparsable: version_problem already says so
        return None
    if any(v == Version(t) for t in TESTED[engine]):
        return None
    return (f"{engine} {version} was never tested with this eagle3-plugin (tested: {', '.join(TESTED[engine])}; "
            f"scripts/matrix.sh tests a version)")


def missing(module: str, *attrs: str) -> str | None:
    """None if `module` imports and has every attr, else a reason naming what is missing."""
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return f"cannot import {module}: {type(e).__name__}: {e}"
    absent = [a for a in attrs if not hasattr(mod, a)]
    return f"{module} lacks {', '.join(absent)}" if absent else None


def family_module(engine: str, family_name: str):
    """The engine module of a family (``eagle3_plugin.<engine>.<family>``), or the reason it cannot be imported."""
    try:
        return importlib.import_module(f"eagle3_plugin.{engine}.{family_name}"), None
    except Exception as e:  # noqa: BLE001 - e.g. an engine internal the module subclasses is missing
        return None, f"{type(e).__name__}: {e}"
