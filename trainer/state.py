"""The resumable training state: everything needed to continue a run exactly (fp32 draft weights, optimizer, RNG, data
position, the resolved config), crash-proof at every instant, and never a pickle.

Layout, inside the output folder (engines only read config.json + model.safetensors next to it):

    train_state/step-00000200/   draft_fp32.safetensors, optimizer.safetensors, optimizer.json, rng.safetensors,
                                 rng.json, history.json, train_config.json, [deepspeed/ ...], manifest.json
    train_state/tb/              TensorBoard event files (never moved)

A save fills ``step-N.tmp/`` and writes ``manifest.json`` (every file with its size and sha256) last, then renames
the folder to ``step-N`` and only then removes older states. Whatever instant a kill hits, the newest folder with a
valid manifest is complete; ``load_newest`` picks it, verifies every file against the manifest (so files a user
swapped in, including DeepSpeed's pickled partitions, are refused before anything reads them) and removes the rest.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_DIR = "train_state"
MANIFEST = "manifest.json"
_STEP = re.compile(r"^step-(\d{8})$")


@dataclass
class History:
    step: int = 0
    epoch: int = 0
    position: int = 0                       # index into this epoch's order
    best_al: float = -1.0
    best_step: int = 0
    best_train_al: float | None = None      # the best draft's AL on a probe of training prompts (memorisation gap)
    evals: list = field(default_factory=list)
    order: list = field(default_factory=list)   # this epoch's sample order


class StateError(SystemExit):
    """A training state that cannot be resumed (one line on the command line)."""


# ---- the two ways a save touches the disk (one place, so fault-injection tests can cut in after each)
def _write(path: Path, payload: bytes | dict[str, torch.Tensor]) -> None:
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        save_file({k: v.detach().cpu().contiguous() for k, v in payload.items()}, str(path))


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=1) + "\n").encode()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- optimizer and RNG as tensors + JSON
def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    scalars = {f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items() if not torch.is_tensor(v)}
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_payload() -> tuple[dict[str, torch.Tensor], dict]:
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state()}, {"python": [version, list(internal), gauss]}


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


# ---- save / load
def save(out: Path, step: int, draft, updater, hist: History, config: dict, dist) -> Path:
    """Write the state of `step` (every rank calls this; rank 0 writes all but DeepSpeed's partitions)."""
    root = out / STATE_DIR
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"     # one writer per output folder: a leftover .tmp is from a killed save
    if dist.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    updater.save_partitions(tmp)            # DeepSpeed: every rank writes its optimizer partition
    dist.barrier()
    if dist.main:
        _write(tmp / "draft_fp32.safetensors", dict(draft.state_dict()))
        if updater.engine is None:
            tensors, meta = optimizer_tensors(updater.opt)
            _write(tmp / "optimizer.safetensors", tensors)
            _write(tmp / "optimizer.json", _json(meta))
        rng_t, rng_meta = _rng_payload()
        _write(tmp / "rng.safetensors", rng_t)
        _write(tmp / "rng.json", _json(rng_meta))
        _write(tmp / "history.json", _json(asdict(hist)))
        _write(tmp / "train_config.json", _json(config))
        files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        _write(tmp / MANIFEST, _json({"step": step, "files": files}))
        if final.exists():                  # the same step saved again (a resumed run's last step)
            shutil.rmtree(final)
        _rename(tmp, final)
        for older in _complete_states(root)[1:]:
            shutil.rmtree(older, ignore_errors=True)
    dist.barrier()
    return final


def _complete_states(root: Path) -> list[Path]:
    """State folders with a manifest, newest first (validity is checked by `_verify`)."""
    steps = [p for p in root.glob("step-*") if _STEP.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(steps, key=lambda p: p.name, reverse=True)


def _verify(state: Path) -> str | None:
    """None if every file in the manifest is there, with its size and sha256 (and nothing unlisted), else why not."""
    try:
        manifest = json.loads((state / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError) as e:
        return f"unreadable {MANIFEST} ({e})"
    for name, want in files.items():
        p = state / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != want["size"] or _sha256(p) != want["sha256"]:
            return f"{name} differs from what eagle3-train wrote (size or sha256)"
    extra = [str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()
             and str(p.relative_to(state)) not in files and p.name != MANIFEST]
    if extra:
        return f"files eagle3-train did not write: {', '.join(sorted(extra)[:3])}"
    return None


def newest(out: Path) -> tuple[Path | None, list[str]]:
    """The newest verified state folder (or None) and why each newer candidate was passed over."""
    root = out / STATE_DIR
    skipped = []
    for state in _complete_states(root) if root.is_dir() else []:
        problem = _verify(state)
        if problem is None:
            return state, skipped
        skipped.append(f"{state}: {problem}")
    return None, skipped


def clean(out: Path, keep: Path | None) -> None:
    """Remove half-written and superseded states (everything under train_state/ but `keep` and tb/)."""
    root = out / STATE_DIR
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.startswith("step-") and p != keep:
            shutil.rmtree(p, ignore_errors=True)


def stored_config(state: Path) -> dict:
    return json.loads((state / "train_config.json").read_text())


def load(state: Path, draft, updater) -> History:
    """Restore weights, optimizer, RNG and data position from a verified state folder."""
    draft.load_state_dict(load_file(str(state / "draft_fp32.safetensors")))
    if updater.engine is not None:
        if not (state / "deepspeed").is_dir():
            raise StateError(f"{state}: written without --deepspeed; resume without it, or pass --overwrite")
        updater.load_partitions(state)      # DeepSpeed's own loader; its files were verified against the manifest
    else:
        if not (state / "optimizer.safetensors").is_file():
            raise StateError(f"{state}: written with --deepspeed; resume with it, or pass --overwrite")
        load_optimizer(updater.opt, load_file(str(state / "optimizer.safetensors")),
                       json.loads((state / "optimizer.json").read_text()))
    _restore_rng(load_file(str(state / "rng.safetensors")), json.loads((state / "rng.json").read_text()))
    return History(**json.loads((state / "history.json").read_text()))
