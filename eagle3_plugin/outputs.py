"""Output-folder safety shared by every command that writes a folder (train -> draft, dump-features, tiny targets).

A command writes only into a folder that is missing, empty, or recognisably its own. "Its own" means the folder
holds our marker file ``.eagle3-output.json``::

    {"kind": "draft", "tool": "eagle3-plugin", "version": "0.1.0", "written": ["model.safetensors", ...]}

``written`` lists every entry we created there, so ``--overwrite`` can remove exactly those and nothing a user
put next to them (notes, a README, a model card). Everything else is refused before any work starts, with an
``OutputError`` (a ``SystemExit``, so the CLI prints one line instead of a traceback).

Files are written to a temporary name in the same folder and renamed into place (``atomic_write``): a reader
never sees half a file, and a crash leaves the previous one intact.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Iterable

MARKER = ".eagle3-output.json"
TOOL = "eagle3-plugin"
KINDS = ("draft", "features", "tiny-target")


class OutputError(SystemExit):
    """An output folder we must not write into. The message names the folder, the reason and the fix."""


def claim_output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
                     protect: Iterable[str | os.PathLike] = ()) -> Path:
    """Make ``path`` ready for a ``kind`` output, or raise ``OutputError`` before anything is touched.

    Accepted: a missing folder (created, mode per umask), an empty one, or one whose marker says ``kind``; with
    ``overwrite`` the entries the marker lists are deleted first. Refused: a file, a non-empty folder without our
    marker, a folder holding another kind of output (even with ``overwrite``), and any folder that equals, lies
    inside or contains one of ``protect`` (the target model, the data, the features the command reads)."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}; one of {', '.join(KINDS)}")
    out = Path(path)
    _refuse_protected(out, kind, protect)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file, not a folder; the {kind} output is a folder: pick an empty or new "
                          f"folder")
    marker = _read_marker(out) if out.is_dir() else None
    if marker is None:
        if out.is_dir() and any(out.iterdir()):
            names = sorted(p.name for p in out.iterdir())
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise OutputError(f"{out}: not empty ({shown}) and not written by eagle3-train, so writing the {kind} "
                              f"there could clobber those files. Pick an empty or new folder (--overwrite only "
                              f"replaces what eagle3-train wrote, and it wrote nothing here)")
        out.mkdir(parents=True, exist_ok=True)
        _write_marker(out, {"kind": kind, "tool": TOOL, "version": _version(), "written": []})
        return out
    if marker["kind"] != kind:
        raise OutputError(f"{out}: holds eagle3-train's {marker['kind']} output, and this command writes a {kind} "
                          f"folder; pick an empty or new folder (--overwrite never replaces another command's output)")
    if overwrite:
        doomed = [_inside(out, name) for name in marker["written"]]   # every entry checked before any is removed
        for p in doomed:
            _remove(p)
        _write_marker(out, {**marker, "version": _version(), "written": []})
    return out


def record_written(path: str | os.PathLike, *names: str) -> None:
    """Add entry names (relative to the folder) to its marker, so ``--overwrite`` can remove them later. Record a
    name before writing the entry: a crash in between then leaves nothing of ours unlisted."""
    out = Path(path)
    marker = _read_marker(out)
    if marker is None:
        raise OutputError(f"{out}: no {MARKER}; claim the folder with claim_output_dir() before writing to it")
    written = list(marker["written"])
    for name in names:
        _inside(out, name)
        if name not in written:
            written.append(name)
    if written != marker["written"]:
        _write_marker(out, {**marker, "version": _version(), "written": written})


def is_ours(path: str | os.PathLike, kind: str) -> bool:
    """Whether ``path`` is a folder holding eagle3-train's ``kind`` output."""
    try:
        marker = _read_marker(Path(path))
    except OutputError:
        return False
    return marker is not None and marker["kind"] == kind


def atomic_write(dest: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` creates the file at a temporary path next to ``dest``, which is then renamed over ``dest``.
    The file gets the mode the umask gives new files (0644 under umask 022); on failure it is removed and ``dest``
    keeps its previous content."""
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        write(tmp)
        # some writers (safetensors' save_file, like tempfile.mkstemp) create 0600 files, unreadable by a serving
        # engine running as another user
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------- helpers
def _refuse_protected(out: Path, kind: str, protect: Iterable[str | os.PathLike]) -> None:
    # resolve() follows symlinks, so a link pointing at the target model is caught too
    o = out.resolve()
    for p in protect:
        q = Path(p).resolve()
        if o == q:
            how = "is"
        elif q in o.parents:
            how = "is inside"
        elif o in q.parents:
            how = "contains"
        else:
            continue
        raise OutputError(f"{out}: the {kind} output folder {how} {p}, which this command reads; writing there "
                          f"would damage it. Pick an empty or new folder outside it")


def _read_marker(out: Path) -> dict | None:
    """The marker of ``out``, None if it has none; OutputError if it has one we cannot trust."""
    m = out / MARKER
    if not m.exists():
        return None
    try:
        marker = json.loads(m.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise OutputError(f"{m}: unreadable ({e}), so what eagle3-train wrote here is unknown; pick an empty or "
                          f"new folder") from None
    if not (isinstance(marker, dict) and marker.get("tool") == TOOL and isinstance(marker.get("kind"), str)
            and isinstance(marker.get("written"), list)):
        raise OutputError(f"{m}: not an eagle3-train output marker; pick an empty or new folder")
    return marker


def _write_marker(out: Path, marker: dict) -> None:
    atomic_write(out / MARKER, lambda tmp: tmp.write_text(json.dumps(marker, indent=1) + "\n"))


def _inside(out: Path, name: str) -> Path:
    """``out / name``, refusing names that would leave the folder (a hand-edited marker must not make
    --overwrite delete files elsewhere)."""
    p = out / name
    if Path(name).is_absolute() or ".." in Path(name).parts or name in ("", ".", MARKER):
        raise OutputError(f"{out / MARKER}: refusing entry {name!r}: not a name inside the folder; pick an empty "
                          f"or new folder")
    return p


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif os.path.lexists(p):
        p.unlink()


def _umask() -> int:
    # /proc reports it without changing it; os.umask() can only be read by setting it, which races other threads
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _version() -> str:
    from . import __version__
    return __version__


__all__ = ["MARKER", "KINDS", "OutputError", "claim_output_dir", "record_written", "is_ours", "atomic_write"]
