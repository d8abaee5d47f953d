"""Entry points: thin functions the engines and the shell call. They only call into the package, and the engine
hooks never raise: a failure is logged with its reason and the engine keeps working."""
from __future__ import annotations

import logging
import traceback


def call_safely(engine: str, fn_path: str) -> None:
    """Import and call ``module:function``; log (never raise) on any failure."""
    try:
        import importlib
        module, name = fn_path.split(":")
        getattr(importlib.import_module(module), name)()
    except BaseException as e:  # noqa: BLE001 - a plugin must never take the engine down
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        log = _engine_logger(engine)
        log.error("eagle3-plugin: registration into %s failed, nothing registered: %s: %s\n%s", engine,
                  type(e).__name__, e, traceback.format_exc())


def _engine_logger(engine: str) -> logging.Logger:
    try:
        if engine == "vllm":
            from vllm.logger import init_logger
            return init_logger("vllm.eagle3_plugin")
    except Exception:  # noqa: BLE001
        pass
    return logging.getLogger(f"{engine}.eagle3_plugin")
