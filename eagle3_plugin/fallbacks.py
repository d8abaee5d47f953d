"""Counted fallbacks: places where the plugin cannot do its part inside a running engine and lets the engine's own
default path run instead. The output stays correct (the target verifies every token), but the draft sees other inputs
than it was trained on, so acceptance drops without any error: such a fallback must never be silent.

Each fallback is logged once per cause (exception type + where it was raised) through the engine's logger, and
counted in a process-wide counter. Engines run the plugin in their own processes (SGLang: every scheduler), so the
counts are also mirrored to a small JSON file per process under ``state_dir()`` (the first time a cause occurs, then
at most every ``FLUSH_EVERY_S`` seconds, and at exit). ``eagle3-train doctor`` adds up this process's counter and
those files. Set ``EAGLE3_PLUGIN_STATE_DIR=off`` to keep the counter in memory only. Nothing here imports an engine.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

FLUSH_EVERY_S = 10.0
_STARTED = int(time.time())        # in the record file's name, so a reused pid never overwrites an older record


@dataclass(frozen=True)
class Kind:
    """One kind of fallback: how doctor names it and what it costs the user."""
    key: str
    label: str
    consequence: str


SGLANG_DRAFT_INPUTS = Kind(
    "sglang_draft_inputs", "SGLang draft input fallbacks",
    "acceptance is lower when this happens: that draft prefill used SGLang's default inputs (the target's "
    "image/audio embeddings at the media placeholders) instead of the placeholder token ids the draft was trained "
    "on; outputs stay correct, only acceptance and speedup drop on requests with media")
KINDS = {k.key: k for k in (SGLANG_DRAFT_INPUTS,)}


@dataclass
class _Cause:
    count: int = 0
    error: str = ""             # the first occurrence's exception, one line
    first_seen: float = 0.0
    last_seen: float = 0.0


@dataclass
class _State:
    causes: dict = field(default_factory=dict)       # (kind key, cause) -> _Cause
    lock: threading.Lock = field(default_factory=threading.Lock)
    flushed_at: float = 0.0
    dirty: bool = False
    atexit_set: bool = False


_STATE = _State()


def cause_of(exc: BaseException) -> str:
    """A stable name for where `exc` comes from: its type and the innermost frame (file:line in function)."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno} in {tb[-1].name}" if tb else ""
    return f"{type(exc).__name__}{where}"


def record(kind: Kind, exc: BaseException, what: str, log: logging.Logger) -> bool:
    """Count one fallback of `kind` caused by `exc` while doing `what`; log a warning the first time this cause is
    seen in this process. True when it was logged. Never raises."""
    try:
        cause = cause_of(exc)
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        now = time.time()
        with _STATE.lock:
            c = _STATE.causes.setdefault((kind.key, cause), _Cause(error=error, first_seen=now))
            c.count += 1
            c.last_seen = now
            first = c.count == 1
            _STATE.dirty = True
        if first:
            where = cause.split(" ", 1)[1] if " " in cause else "no traceback"
            log.warning("eagle3-plugin: %s failed: %s (%s). %s. Logged once per cause; every occurrence is counted "
                        "(`eagle3-train doctor` shows the count).", what, error, where,
                        kind.consequence[0].upper() + kind.consequence[1:])
        _maybe_flush(force=first)
        return first
    except Exception:  # noqa: BLE001 - the fallback path must never break the engine
        return False


def counts() -> dict:
    """This process's counts: {kind key: {cause: {"count", "error", "first_seen", "last_seen"}}}."""
    out: dict = {}
    with _STATE.lock:
        for (key, cause), c in _STATE.causes.items():
            out.setdefault(key, {})[cause] = {"count": c.count, "error": c.error, "first_seen": c.first_seen,
                                               "last_seen": c.last_seen}
    return out


def total(kind: Kind) -> int:
    return sum(c["count"] for c in counts().get(kind.key, {}).values())


def reset() -> None:
    """Forget this process's counts (tests)."""
    with _STATE.lock:
        _STATE.causes.clear()
        _STATE.dirty = False


# ------------------------------------------------------------------------------------------------ persistence
def state_dir() -> Path | None:
    env = os.environ.get("EAGLE3_PLUGIN_STATE_DIR")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "eagle3-plugin"


def _record_path(d: Path, host: str, pid: int) -> Path:
    return d / f"fallbacks-{host}-{pid}-{_STARTED}.json"


def _maybe_flush(force: bool = False) -> None:
    d = state_dir()
    if d is None:
        return
    now = time.monotonic()
    if not force and now - _STATE.flushed_at < FLUSH_EVERY_S:
        return
    _STATE.flushed_at = now
    if not _STATE.atexit_set:
        _STATE.atexit_set = True
        atexit.register(flush)
    flush()


def flush() -> None:
    """Write this process's counts to its record file (nothing when there is nothing new). Never raises."""
    d = state_dir()
    if d is None or not _STATE.dirty:
        return
    try:
        _STATE.dirty = False
        host = socket.gethostname()
        body = {"pid": os.getpid(), "host": host, "argv": " ".join(sys.argv)[:300], "updated": time.time(),
                "fallbacks": counts()}
        d.mkdir(parents=True, exist_ok=True)
        path = _record_path(d, host, os.getpid())
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(body, indent=1))
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except PermissionError:
        return True
    except OSError:
        return False


def recorded() -> list[dict]:
    """Every process's record file in state_dir() (this process's excluded: counts() is newer)."""
    d = state_dir()
    if d is None or not d.is_dir():
        return []
    me, host = os.getpid(), socket.gethostname()
    out = []
    for p in sorted(d.glob("fallbacks-*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if p == _record_path(d, host, me):
            continue
        rec["path"] = str(p)
        rec["running"] = _alive(int(rec.get("pid", -1))) if rec.get("host") == host else None
        out.append(rec)
    return out


def report_lines(kind: Kind) -> list[str]:
    """doctor's lines for one kind: the total, then one line per process and cause."""
    here = counts().get(kind.key, {})
    others = [(r, r.get("fallbacks", {}).get(kind.key, {})) for r in recorded()]
    others = [(r, c) for r, c in others if c]
    n = sum(c["count"] for c in here.values()) + sum(c["count"] for _, cs in others for c in cs.values())
    d = state_dir()
    where = f"this process and the records in {d}" if d else "this process (EAGLE3_PLUGIN_STATE_DIR=off)"
    if not n:
        return [f"{kind.label}: 0 (counted in {where})"]
    lines = [f"{kind.label}: {n} ({kind.consequence})"]
    for cause, c in here.items():
        lines.append(f"    {c['count']:>6}  this process: {c['error']} ({cause})")
    for r, cs in others:
        state = {True: "running", False: "ended", None: "other host"}[r["running"]]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("updated", 0)))
        for cause, c in cs.items():
            lines.append(f"    {c['count']:>6}  pid {r.get('pid')} on {r.get('host')} ({state}, last written {when}): "
                         f"{c['error']} ({cause})")
    if d:
        lines.append(f"    (records: {d}/fallbacks-*.json; delete them to start counting afresh)")
    return lines
