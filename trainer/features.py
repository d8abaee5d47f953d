"""Offline training: run the target once over the data, store the features the draft trains on, and train from them
as often as needed (`eagle3-train dump-features`, then `eagle3-train train --features DIR`).

On-disk layout of a features folder (format 3):
  .eagle3-output.json         outputs.py's ownership marker: kind "features" and every file this dump writes
  manifest.json               the run's identity, the sample index, the shard plan and the finished shards
  manifest.rank<r>.json       while dumping: the files process r has finished, rewritten atomically after each one;
                              folded into manifest.json at the end (a reader merges any that are left over)
  head.safetensors            embed_tokens and lm_head of the target (rebuild logits, initialise the draft)
  tokens.safetensors          input_ids [N] int32 and loss_mask [N] bool of all samples back to back (N = all their
                              tokens; each sample's slice follows from the token counts in the manifest), so the
                              trainer gets every sample without opening a shard
  shards/<nnnnn>.safetensors  consecutive samples, about SHARD_BYTES each; tensors are named "<key>.<name>", key =
                              the sample's 8-digit index:
      <key>.positions  [T] or [3, T] int32   what the engines feed the draft (3 rows for M-RoPE)
      <key>.aux        [T, n_aux*H]          bf16, or int8 with <key>.aux_scale [T, n_aux*H/G] and <key>.aux_chan
                                             [n_aux*H] (bf16): aux = int8 * scale * chan
      <key>.last_hidden [R, H]               the same (bf16, or int8 with _scale [R, H/G] and _chan [H]), only at the
                                             R positions teacher_rows(loss_mask, teacher_steps) marks, in order
  The last hidden state only gives the teacher (the target's distribution), and training reads the teacher at
  position j only where token j+1 is an assistant (loss_mask) token — plus, for the simulated-acceptance statistics,
  up to teacher_steps - 1 positions past an assistant turn (a consecutive-correct chain from a scored position
  compares with the target's argmax there). So only those rows are stored; the index set is implied by the stored
  loss_mask and the manifest's teacher_steps (no extra tensor), and the reader scatters them back into a [T, H]
  tensor with zeros elsewhere: rows ttt_forward never reads, so the loss, its gradient and every StepStats field
  are exactly those of the dense features (tests). Disk per token: bytes_per_token, a function of that share.
  int8 (--storage int8, about half the disk of bf16): each channel is divided by its RMS over the sample's stored
  rows (chan), then quantised with one absmax per token and group of G = 128 channels (G = H when H is not a
  multiple of 128, i.e. one scale per token and aux chunk). One scale per token and chunk alone is not enough: real
  residual streams are heavy-tailed with a few channels 10-100x the rest, which costs 2-6% relative error (tests),
  against under 1% like this.
  Format 2 folders (dense last_hidden, int64 ids and positions) are still read; a dump never resumes one (it says
  so and names --overwrite).

Never mixing runs: manifest.json's RUN_FIELDS (target fingerprint = resolved path + config.json sha256 + weight file
sizes; data file sha256; a digest of the tokenised samples; aux layer ids; max_length; storage; teacher_steps; shard
size) must all
match for a dump to resume in an existing folder; anything else is refused before any work, naming what differs.
The folder is claimed like every eagle3-train output (outputs.py): its marker lists every file the dump writes, and
--overwrite deletes exactly those (then starts over), never anything else; a folder of foreign files is refused.

Crash safety: every file is written under a temporary name and renamed into place (outputs.atomic_write); a shard is
recorded (size, sha256, sample count) only once it is in place. A rerun verifies the recorded shards and redoes
missing or damaged ones. Under torchrun every rank dumps every WORLD_SIZE-th shard; rank 0 claims the folder first
and, after a barrier at the end, merges the records.

Reading (FeatureStore) takes the sample index from the manifest and opens a shard (safetensors.safe_open) only when
one of its samples is needed; a damaged shard is reported with a DataError naming the file, the sample and the fix
and its samples are skipped, so training goes on with the rest.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from eagle3_plugin.models import model_config, resolve_model
from eagle3_plugin.outputs import atomic_write, claim_output_dir, is_ours, record_written

from .data import DataError, Sample
from .target import TargetFeatures

FORMAT = 3
READS = (2, 3)                               # formats FeatureStore reads (2: dense last_hidden, int64 ids/positions)
KIND = "eagle3-train dump-features"          # marks a manifest as ours
STORAGES = ("bf16", "int8")
SHARD_BYTES = 512 * 2**20                    # a crash loses at most one shard of work
INT8_GROUP = 128
MANIFEST = "manifest.json"
HEAD = "head.safetensors"
TOKENS = "tokens.safetensors"
RUN_FIELDS = ("target", "data", "samples_sha256", "aux_layer_ids", "max_length", "storage", "teacher_steps",
              "shard_bytes")
TEACHER_STEPS = 7                            # the trainer's default --ttt-steps
FIX_SHARD = "re-run `eagle3-train dump-features` with the same arguments: it verifies the shards and redoes bad ones"
FIX_RUN = "use another --output, or --overwrite to start over there (only the files the dump wrote are deleted)"


# ------------------------------------------------------------------------------------------ storage formats
def int8_group(hidden: int) -> int:
    return INT8_GROUP if hidden % INT8_GROUP == 0 else hidden


def teacher_rows(loss_mask: torch.Tensor, steps: int = TEACHER_STEPS) -> torch.Tensor:
    """[T] bool: the positions whose last hidden state (the teacher) training reads, for a TTT unroll of up to
    `steps` steps (ttt.ttt_forward, index j = the target at position j, which predicts token j+1):
      loss and accuracy   the target at j where token j+1 is an assistant token (loss_mask[j+1])
      simulated AL        from a scored position, the consecutive-correct chain compares step i with the target's
                          argmax i positions further on: up to steps - 1 positions past an assistant token
    i.e. j with loss_mask[j+1-i] for some i in [0, steps - 1]. A superset of what is read (ttt also requires the
    target's argmax to be in the draft vocab, and never reads position 0), so dropping the others changes nothing."""
    m = loss_mask.to(torch.bool).reshape(-1)
    nxt = torch.zeros_like(m)
    nxt[:-1] = m[1:]
    rows = nxt.clone()
    for i in range(1, min(int(steps), m.numel())):
        rows[i:] |= nxt[:-i]
    return rows


def _row_bytes(values: int, storage: str, group: int) -> int:
    """Disk bytes of one stored row of `values` features."""
    if storage == "bf16":
        return 2 * values
    if storage == "int8":
        return values + 2 * (values // group)                    # int8 values + one bf16 scale per group
    raise ValueError(f"storage {storage!r} is not one of {', '.join(STORAGES)}")


def bytes_per_token(hidden: int, n_aux: int = 3, storage: str = "bf16", position_rows: int = 1,
                    teacher_share: float = 1.0) -> float:
    """Disk bytes per token: n_aux aux states at every token; the last hidden state at the share of tokens whose
    teacher training reads (teacher_rows: about the data's assistant share; teacher_tokens / tokens in the manifest,
    1.0 = every token, the most it can be); input_ids (int32), loss_mask (bool) and positions (int32 per row).
    = fixed + teacher_share x row, see bytes_per_token_parts. Per-sample extras (tensor headers, int8's channel
    scales: about as much as one bf16 token) are left out."""
    fixed, row = bytes_per_token_parts(hidden, n_aux, storage, position_rows)
    return fixed + teacher_share * row


def bytes_per_token_parts(hidden: int, n_aux: int = 3, storage: str = "bf16", position_rows: int = 1):
    """(bytes every token takes, bytes of one stored last-hidden row): bytes_per_token = fixed + share x row."""
    g = int8_group(hidden)
    return _row_bytes(n_aux * hidden, storage, g) + 4 + 1 + 4 * position_rows, _row_bytes(hidden, storage, g)


def quantize_int8(x: torch.Tensor, group: int) -> dict[str, torch.Tensor]:
    """[T, D] -> {"q": int8 [T, D], "scale": bf16 [T, D/group], "chan": bf16 [D]}: x = q * scale * chan.

    chan is the channel's RMS over the sample's tokens: dividing by it first evens out channels whose scales
    differ a lot (real residual streams have a few channels 10-100x larger than the rest), so one absmax per token
    and group of channels fits all of them. Both scales are rounded to bf16 *before* they are used, so dequantising
    with the stored values is exact up to the int8 rounding; bf16 (not fp16) so tiny and huge scales both fit. The
    floors keep all-zero channels and groups finite."""
    t, d = x.shape
    x = x.float()
    if t == 0:          # a sample without a stored row (no assistant token): empty tensors, a neutral chan
        return {"q": x.new_zeros(0, d, dtype=torch.int8), "scale": x.new_zeros(0, d // group, dtype=torch.bfloat16),
                "chan": x.new_ones(d, dtype=torch.bfloat16)}
    chan = x.pow(2).mean(0).sqrt().clamp_min(1e-30).to(torch.bfloat16)
    g = (x / chan.float()).reshape(t, d // group, group)
    scale = (g.abs().amax(-1) / 127).clamp_min(1e-30).to(torch.bfloat16)
    q = (g / scale.float()[..., None]).round().clamp(-127, 127).to(torch.int8)
    return {"q": q.reshape(t, d), "scale": scale, "chan": chan}


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, chan: torch.Tensor) -> torch.Tensor:
    t, d = q.shape
    groups = scale.shape[-1]
    return (q.float().reshape(t, groups, d // groups) * scale.float()[..., None]).reshape(t, d) * chan.float()


def _read_features(f, name: str) -> torch.Tensor:
    """A stored aux/last_hidden tensor as fp32, whichever storage it was written in."""
    x = f.get_tensor(name)
    if x.dtype == torch.int8:
        return dequantize_int8(x, f.get_tensor(f"{name}_scale"), f.get_tensor(f"{name}_chan"))
    return x.float()


# ------------------------------------------------------------------------------------------ small helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 * 2**20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    text = json.dumps(obj, indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _file_problem(out: Path, rel: str, rec: dict | None, checksum: bool) -> str | None:
    """Why the recorded file `rel` is not usable, or None when it is."""
    if rec is None:
        return "not written yet (the dump did not get to it)"
    p = out / rel
    if not p.exists():
        return "file is missing (deleted?)"
    size = p.stat().st_size
    if size != rec["bytes"]:
        how = "truncated" if size < rec["bytes"] else "grown"
        return f"file is {size} bytes, the manifest says {rec['bytes']} ({how})"
    if checksum and _sha256(p) != rec["sha256"]:
        return "sha256 differs from the manifest (the file is corrupted)"
    return None


def rank_shards(num_shards: int, rank: int, world: int) -> list[int]:
    """The shards one process dumps: every world-th, starting at its rank."""
    return list(range(rank, num_shards, world))


def _rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _rank_file(rank: int) -> str:
    return f"manifest.rank{rank}.json"


def _finished(out: Path, manifest: dict) -> dict:
    """Finished files: manifest.json's, updated by the per-rank records (newer: a rank may have redone a shard)."""
    done = dict(manifest["done"])
    for p in sorted(out.glob("manifest.rank*.json")):
        try:
            done.update(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue        # written atomically, so only a foreign edit gets here: its shards count as unwritten
    return done


# ------------------------------------------------------------------------------------------ run identity
def _target_fingerprint(target_path) -> dict:
    t = resolve_model(target_path).resolve()
    weights = {p.name: p.stat().st_size for p in sorted(t.iterdir()) if p.suffix in (".safetensors", ".bin")}
    return {"path": str(t), "config_sha256": _sha256(t / "config.json"), "weights": weights}


def _samples_digest(samples: list[Sample]) -> str:
    """Token ids and loss masks: catches a changed tokenizer, chat template or truncation the data file's hash
    cannot see (and identifies the data when samples come without a file)."""
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.id}\0{s.num_tokens}\0".encode())
        h.update(s.input_ids.to(torch.int64).numpy().tobytes())
        h.update(s.loss_mask.to(torch.bool).numpy().tobytes())
    return h.hexdigest()


def _run_identity(target_path, aux_ids, data, max_length, storage, shard_bytes, samples=None,
                  teacher_steps: int = TEACHER_STEPS) -> dict:
    run = {"target": _target_fingerprint(target_path),
           "data": {"path": str(Path(data).resolve()), "sha256": _sha256(Path(data))} if data else None,
           "aux_layer_ids": [int(i) for i in aux_ids], "max_length": max_length, "storage": storage,
           "teacher_steps": int(teacher_steps), "shard_bytes": int(shard_bytes)}
    if samples is not None:
        run["samples_sha256"] = _samples_digest(samples)
    return run


def _differences(old: dict, new: dict) -> list[str]:
    """What differs between the folder's run and this one, in words (only the fields `new` knows)."""
    out = []
    for field in RUN_FIELDS:
        if field not in new or old.get(field) == new[field]:
            continue
        a, b = old.get(field), new[field]
        if field == "target":
            a = a or {}
            if a.get("path") != b["path"]:
                out.append(f"target: the folder has {a.get('path')}, this run {b['path']}")
            if a.get("config_sha256") != b["config_sha256"]:
                out.append("target config.json: another sha256")
            if a.get("weights") != b["weights"]:
                out.append(f"target weight files: the folder has {a.get('weights')}, this run {b['weights']}")
        elif field == "data":
            def show(d):
                return f"{d['path']} (sha256 {d['sha256'][:12]})" if d else "samples given without a data file"
            out.append(f"data: the folder has {show(a)}, this run {show(b)}")
        elif field == "samples_sha256":
            out.append("samples: the tokenised samples differ (other tokenizer, chat template or sample list)")
        else:
            out.append(f"{field}: the folder has {a!r}, this run {b!r}")
    return out


def _protected(target_path, data) -> list[Path]:
    """What --output must not be, hold or sit inside: the target (a dump inside it would change its fingerprint)
    and the data's folder (--overwrite there would be a disaster)."""
    return [resolve_model(target_path)] + ([Path(data).resolve().parent] if data else [])


def _check_location(out: Path, protect: list[Path]) -> None:
    o = out.resolve()
    for p in protect:
        q = p.resolve()
        how = "is" if o == q else "is inside" if q in o.parents else "contains" if o in q.parents else None
        if how:
            raise SystemExit(f"--output {out}: {how} {p}, which dump-features reads; write the features to a folder "
                             f"of their own")


def _manifest(out: Path) -> dict | None:
    try:
        m = json.loads((out / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return m if isinstance(m, dict) and m.get("kind") == KIND else None


def check_output(out_dir, target_path, aux_ids, *, data=None, max_length=None, storage: str = "bf16",
                 overwrite: bool = False, shard_bytes: int = SHARD_BYTES, teacher_steps: int = TEACHER_STEPS) -> str:
    """What a dump into `out_dir` would do, changing nothing: "new", "resume" or "replace" (--overwrite: delete
    what the dump wrote and start over). Raises SystemExit naming the folder, what differs and the fix otherwise.
    The CLI calls it before tokenising, so a refusal comes before any work (dump_features checks again, with the
    tokenised samples)."""
    if storage not in STORAGES:
        raise SystemExit(f"--storage {storage!r}: choose one of {', '.join(STORAGES)}")
    if int(teacher_steps) < 1:
        raise SystemExit(f"--ttt-steps {teacher_steps}: at least 1")
    return _inspect(Path(out_dir), _protected(target_path, data), overwrite,
                    lambda: _run_identity(target_path, aux_ids, data, max_length, storage, shard_bytes,
                                          teacher_steps=teacher_steps))


def _inspect(out: Path, protect: list[Path], overwrite: bool, run) -> str:
    """check_output's decision; `run()` makes the identity to compare with (needed only if there is a manifest)."""
    _check_location(out, protect)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--output {out}: is a file; the features go into a folder")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    if not is_ours(out, "features"):
        names = sorted(p.name for p in out.iterdir())
        raise SystemExit(f"{out}: not empty ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}) and not a "
                         f"features folder written by {KIND}, so its files are not ours to mix with or delete "
                         f"(--overwrite only replaces what eagle3-train wrote). Use another --output (a new or "
                         f"empty folder)")
    if overwrite:
        return "replace"
    old = _manifest(out)
    if old is None:                 # claimed, then killed before the manifest: nothing of the run was written
        return "new"
    if old.get("format") != FORMAT:
        diffs = [f"format: the folder has {old.get('format')!r}, this version writes {FORMAT} (training still reads "
                 f"format {', '.join(map(str, READS))} folders; to dump again, --overwrite)"]
    else:
        diffs = _differences(old, run())
    if diffs:
        raise SystemExit(f"{out}: holds features of another run — {'; '.join(diffs)}. Fix: {FIX_RUN}")
    return "resume"


# ------------------------------------------------------------------------------------------ dumping
def _plan(samples: list[Sample], sample_bytes, shard_bytes: int) -> tuple[list[dict], list[dict]]:
    """The sample index and the shards: consecutive samples until a shard would pass shard_bytes
    (sample_bytes(sample): its payload)."""
    index, shards, size = [], [], None
    for i, s in enumerate(samples):
        nbytes = sample_bytes(s)
        if size is None or (size + nbytes > shard_bytes and shards[-1]["samples"]):
            shards.append({"file": f"shards/{len(shards):05d}.safetensors", "samples": 0})
            size = 0
        size += nbytes
        shards[-1]["samples"] += 1
        index.append({"key": f"{i:08d}", "id": s.id, "where": s.where, "tokens": s.num_tokens,
                      "prompt_key": s.prompt_key, "shard": shards[-1]["file"]})   # prompt_key: same eval split
    return index, shards


def _device(device: str) -> str:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return f"cuda:{local}" if device == "cuda" else device


def _shard_tensors(target, rows: list[dict], samples: list[Sample], aux_ids, storage: str, group: int,
                   teacher_steps: int) -> dict:
    tensors = {}
    for row, s in zip(rows, samples):
        key = row["key"]
        inputs = {"input_ids": s.input_ids[None], "attention_mask": torch.ones_like(s.input_ids)[None],
                  **s.mm_inputs}
        f = target.features(inputs, aux_ids)
        pos = f.positions.squeeze(-2)
        if pos.numel() and int(pos.abs().max()) >= 2**31:
            raise SystemExit(f"sample {s.id}: a position of {int(pos.abs().max())} does not fit the int32 format")
        tensors[f"{key}.positions"] = pos.to(torch.int32).cpu().contiguous()
        keep = teacher_rows(s.loss_mask, teacher_steps).to(f.last_hidden.device)
        for name, x in (("aux", f.aux[0]), ("last_hidden", f.last_hidden[0][keep])):
            if storage == "int8":
                packed = quantize_int8(x, group)               # on the target's device: fast on a GPU
                tensors[f"{key}.{name}"] = packed["q"].cpu()
                tensors[f"{key}.{name}_scale"] = packed["scale"].cpu()
                tensors[f"{key}.{name}_chan"] = packed["chan"].cpu()
            else:
                tensors[f"{key}.{name}"] = x.to(torch.bfloat16).cpu().contiguous()
    return tensors


def _save(out: Path, rel: str, tensors: dict, extra: dict | None = None) -> dict:
    """Write under a temporary name, then rename: a kill leaves the old file or the new one, never half of one."""
    p = out / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    rec = {}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp))
        rec.update(bytes=tmp.stat().st_size, sha256=_sha256(tmp), **(extra or {}))
    atomic_write(p, write)
    return rec


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024


def _fold(out: Path, manifest: dict) -> None:
    """Move the per-rank records into manifest.json. Only while no other rank is writing (start and end)."""
    planned = {HEAD, TOKENS} | {s["file"] for s in manifest["shards"]}
    manifest["done"] = {f: r for f, r in _finished(out, manifest).items() if f in planned}
    if manifest != _manifest(out):          # a rerun of a complete dump leaves the folder untouched
        _write_json(out / MANIFEST, manifest)
    for p in out.glob("manifest.rank*.json"):
        p.unlink()


def _alone(world: int) -> bool:
    """Whether rank 0 can know that no other rank is writing: it is the only one, or barriers exist."""
    import torch.distributed as dist
    return world == 1 or (dist.is_available() and dist.is_initialized())


def _open_run(out: Path, protect: list[Path], overwrite: bool, run: dict, new_manifest: dict, files: list[str]):
    """Rank 0: check the folder, claim it, then resume its manifest or start a new one. Every file the dump will
    write is recorded in the marker before the first is written, so --overwrite can always find them all."""
    mode = _inspect(out, protect, overwrite, lambda: run)
    claim_output_dir(out, "features", overwrite=mode == "replace", protect=protect)    # replace: ours deleted
    if mode == "resume":
        record_written(out, *files)         # another world size has other rank files
        return _manifest(out)
    clash = [f for f in files if (out / f).exists()]
    if clash:                               # left after the claim, so not ours: never overwrite them
        raise SystemExit(f"{out}: {', '.join(clash)} exist(s) and not from this command; {FIX_RUN}")
    record_written(out, *files)
    _write_json(out / MANIFEST, new_manifest)
    return new_manifest


def dump_features(target_path, samples: list[Sample], out_dir, aux_ids, progress: bool = True, *, data=None,
                  max_length: int | None = None, device: str = "cpu", dtype: torch.dtype | None = None,
                  storage: str = "bf16", overwrite: bool = False, shard_bytes: int = SHARD_BYTES,
                  teacher_steps: int = TEACHER_STEPS, media=None) -> Path:
    """Dump the target's features for `samples` into `out_dir` (layout: module doc); resumes the same run.

    data / max_length: the jsonl the samples came from and the truncation used (part of the run's identity).
    teacher_steps: the longest TTT unroll (train --ttt-steps) whose statistics must be exact: the last hidden state
    is stored at teacher_rows(loss_mask, teacher_steps). Training with more steps is still exact in its loss and
    gradient; only simulated-acceptance chains running more than teacher_steps - 1 tokens past an assistant turn
    would see the zeros.
    device: "cpu", "cuda" (cuda:LOCAL_RANK) or "auto"; dtype defaults to bf16 on a GPU, fp32 on the CPU.
    media: for samples held without their processor outputs (the command line streams them): a shard's samples ->
    the same samples with their mm_inputs, called when that shard is dumped.
    Under torchrun (RANK / WORLD_SIZE) each process dumps its share of the shards; the barriers need
    torch.distributed initialised (the CLI does it). Returns the folder."""
    from eagle3_plugin.families import family_for_target
    if not samples:
        raise SystemExit("dump-features: no samples to dump")
    if int(teacher_steps) < 1:
        raise SystemExit(f"--ttt-steps {teacher_steps}: at least 1")
    out = Path(out_dir)
    rank, world = _rank_and_world()
    cfg = model_config(target_path)
    family = family_for_target(cfg)
    hidden = int(family.text_config(cfg)["hidden_size"])
    vocab = int(family.text_config(cfg).get("vocab_size") or 0)
    if vocab >= 2**31:
        raise SystemExit(f"vocab_size {vocab}: token ids do not fit the int32 format")
    rows = 3 if family.positions == "mrope" else 1
    run = _run_identity(target_path, aux_ids, data, max_length, storage, shard_bytes, samples, teacher_steps)
    fixed, row_bytes = bytes_per_token_parts(hidden, len(aux_ids), storage, rows)
    teacher = [int(teacher_rows(s.loss_mask, teacher_steps).sum()) for s in samples]
    by_id = {id(s): n for s, n in zip(samples, teacher)}
    index, shards = _plan(samples, lambda s: s.num_tokens * fixed + by_id[id(s)] * row_bytes, shard_bytes)
    tokens = sum(s.num_tokens for s in samples)
    share = sum(teacher) / max(1, tokens)
    per_token = bytes_per_token(hidden, len(aux_ids), storage, rows, share)
    files = [MANIFEST, HEAD, TOKENS] + [s["file"] for s in shards] + [_rank_file(r) for r in range(world)]

    if rank == 0:
        manifest = _open_run(out, _protected(target_path, data), overwrite, run, {
            "format": FORMAT, "kind": KIND, **run, "family": family.name, "hidden_size": hidden,
            "int8_group": int8_group(hidden), "num_samples": len(samples), "tokens": tokens,
            "teacher_tokens": sum(teacher), "samples": index,
            "shards": shards, "done": {}}, files)
        if _alone(world):
            _fold(out, manifest)        # records of an interrupted run (maybe another world size) -> one place
    _barrier()
    if rank != 0:
        manifest = _manifest(out)
        diffs = [f"no {MANIFEST} from rank 0"] if manifest is None else _differences(manifest, run)
        if diffs:
            raise SystemExit(f"{out} (rank {rank}): {'; '.join(diffs)}; run all ranks together under torchrun")

    # what this process owns, and which of it is already done and intact
    done = _finished(out, manifest)
    mine = ([TOKENS, HEAD] if rank == 0 else []) + [shards[j]["file"] for j in rank_shards(len(shards), rank, world)]
    record = {f: done[f] for f in mine if _file_problem(out, f, done.get(f), checksum=True) is None}
    todo = [f for f in mine if f not in record]
    if rank == 0:
        anchor = (len(aux_ids) + 1) * hidden * 2
        resumed = f"; {len(mine) - len(todo)} of this process's {len(mine)} files already done" if record else ""
        print(f"dump-features: {len(samples)} samples, {tokens} tokens, {len(shards)} shards into {out}: about "
              f"{_human(tokens * per_token)} ({storage}: {per_token:.0f} bytes/token = {fixed} + {row_bytes} x "
              f"teacher share {share:.3f} (the last hidden state is stored where training reads it: before "
              f"assistant tokens); {per_token / anchor:.3f} x the anchors' {len(aux_ids)} aux + last hidden in bf16 "
              f"at every token, {anchor} bytes/token){resumed}")
    if todo:
        _dump_files(out, todo, record, target_path, samples, index, aux_ids, storage, int8_group(hidden), device,
                    dtype, progress and rank == 0, teacher_steps, media)

    _barrier()
    if rank == 0 and _alone(world):
        _fold(out, manifest)
    _barrier()
    return out


def _dump_files(out: Path, todo: list[str], record: dict, target_path, samples, index, aux_ids, storage, group,
                device, dtype, progress, teacher_steps: int = TEACHER_STEPS, media=None) -> None:
    """Compute and write the files in `todo`; after each one this rank's record is rewritten (atomically)."""
    from tqdm.auto import tqdm
    from .target import Target
    rank_record = out / _rank_file(_rank_and_world()[0])
    by_shard: dict[str, list[int]] = {}
    for i, row in enumerate(index):
        by_shard.setdefault(row["shard"], []).append(i)
    bar = tqdm(total=sum(len(by_shard.get(f, [])) for f in todo), desc="dump-features", unit="sample",
               disable=not progress)
    target = None
    for f in todo:
        if f == TOKENS:         # needs no target
            ids = torch.cat([s.input_ids for s in samples])
            if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < 2**31):
                raise SystemExit(f"token ids {int(ids.min())}..{int(ids.max())} do not fit the int32 format")
            record[f] = _save(out, f, {"input_ids": ids.to(torch.int32),
                                       "loss_mask": torch.cat([s.loss_mask for s in samples]).to(torch.bool)})
            _write_json(rank_record, record)
            continue
        if target is None:
            dev = _device(device)
            target = Target(target_path, device=dev,
                            dtype=dtype or (torch.bfloat16 if dev.startswith("cuda") else torch.float32))
        if f == HEAD:   # clones: a tied target shares one tensor, which safetensors refuses to store twice
            record[f] = _save(out, f, {"embed_tokens": target.embed_weight().cpu().clone(),
                                       "lm_head": target.lm_head_weight().cpu().clone()})
        else:
            ids = by_shard[f]
            shard = [samples[i] for i in ids]
            tensors = _shard_tensors(target, [index[i] for i in ids], media(shard) if media else shard, aux_ids,
                                     storage, group, teacher_steps)
            record[f] = _save(out, f, tensors, {"samples": len(ids)})
            bar.update(len(ids))
        _write_json(rank_record, record)
    bar.close()


# ------------------------------------------------------------------------------------------ reading
class FeatureStore:
    """A dumped features folder: the sample index from the manifest, shards opened on demand.

    samples(errors) skips shards that are missing or truncated; load(key) also checks a shard's sha256
    the first time it is used (verify_checksums) and raises DataError for a bad shard, so the caller can skip the
    sample. Bad shards are remembered in `bad_shards` and their samples counted in `skipped_samples`.
    Reads format 3 and format 2 (dense last_hidden, int64 ids); `teacher_steps`: the TTT unroll whose statistics
    the stored teacher rows cover (None: all rows stored)."""

    def __init__(self, path, verify_checksums: bool = True):
        self.path = Path(path)
        manifest = _manifest(self.path)
        if manifest is None or manifest.get("format") not in READS:
            old = (f" (it holds format {manifest.get('format')!r})" if manifest is not None else
                   " (it holds an older or foreign layout)" if self.path.exists() else "")
            raise SystemExit(f"{self.path / MANIFEST}: no features manifest of format "
                             f"{' or '.join(map(str, READS))}{old} — create it with `eagle3-train dump-features "
                             f"--output {self.path}` (--overwrite to replace an old dump)")
        self.meta = manifest
        self.teacher_steps = int(manifest["teacher_steps"]) if manifest["format"] >= 3 else None
        self._masks: dict[str, torch.Tensor] | None = None
        self.index = manifest["samples"]
        self.verify_checksums = verify_checksums
        self._rows = {r["key"]: r for r in self.index}
        self._by_shard: dict[str, list[dict]] = {s["file"]: [] for s in manifest["shards"]}
        for r in self.index:
            self._by_shard[r["shard"]].append(r)
        self._done = _finished(self.path, manifest)
        self._verified: set[str] = set()
        self.bad_shards: dict[str, DataError] = {}
        problem = _file_problem(self.path, HEAD, self._done.get(HEAD), checksum=False)
        if problem:
            raise SystemExit(f"{self.path / HEAD}: {problem} — fix: {FIX_SHARD}")
        head = load_file(str(self.path / HEAD))
        self._embed, self._head = head["embed_tokens"], head["lm_head"]

    def check_target(self, target_cfg: dict, family) -> None:
        """The features must come from this target: same family, hidden size and vocab (the path may differ)."""
        meta, where = self.meta, self.path / MANIFEST
        hidden = int(family.text_config(target_cfg)["hidden_size"])
        vocab = int(family.text_config(target_cfg)["vocab_size"])
        problems = []
        if meta.get("family") != family.name:
            problems.append(f"family {meta.get('family')!r} != the target's {family.name!r}")
        if int(meta.get("hidden_size", hidden)) != hidden:
            problems.append(f"hidden_size {meta.get('hidden_size')} != the target's {hidden}")
        if int(self._head.shape[0]) != vocab:
            problems.append(f"lm_head rows {int(self._head.shape[0])} != the target's vocab_size {vocab}")
        if problems:
            raise SystemExit(f"{where}: these features were dumped from another target ({meta['target']['path']}): "
                             f"{'; '.join(problems)}. Dump them again for this --target.")

    def embed_weight(self):
        return self._embed

    def lm_head_weight(self):
        return self._head

    @property
    def skipped_samples(self) -> int:
        return sum(len(self._by_shard[f]) for f in self.bad_shards)

    def _bad(self, shard: str, problem: str) -> DataError:
        rows = self._by_shard[shard]
        err = DataError(str(self.path / shard), f"{problem}; its {len(rows)} samples ({rows[0]['key']}.."
                                                f"{rows[-1]['key']}) are skipped", FIX_SHARD)
        self.bad_shards[shard] = err
        return err

    def samples(self, errors: list | None = None) -> list[Sample]:
        """Token ids and loss masks of every usable sample (Sample.id = the key for load()), from tokens.safetensors;
        shards are only looked at (exists, size), not opened. A bad shard raises DataError, or goes to `errors` and
        its samples are skipped; SystemExit when nothing usable is left."""
        problem = _file_problem(self.path, TOKENS, self._done.get(TOKENS), checksum=self.verify_checksums)
        if problem:
            raise SystemExit(f"{self.path / TOKENS}: {problem}; no sample is usable without it. Fix: {FIX_SHARD}")
        ids, masks = self._tokens()
        out = []
        for shard, rows in self._by_shard.items():
            problem = _file_problem(self.path, shard, self._done.get(shard), checksum=False)
            if problem is None:
                out += [Sample(r["key"], ids[r["key"]], masks[r["key"]], {}, r["where"], r["prompt_key"])
                        for r in rows]
                continue
            err = self._bad(shard, problem)
            if errors is None:
                raise err
            errors.append(err)
        if not out:
            first = next(iter(self.bad_shards.values()), None)
            raise SystemExit(f"{self.path}: no usable samples: all {len(self._by_shard)} shards are bad "
                             f"(first: {first}). Fix: {FIX_SHARD}")
        return out

    def _tokens(self) -> tuple[dict, dict]:
        """Per sample key: input_ids (int64) and loss_mask, from tokens.safetensors (the masks are kept: load()
        needs them to place the stored teacher rows)."""
        tokens = load_file(str(self.path / TOKENS))
        keys, counts = [r["key"] for r in self.index], [r["tokens"] for r in self.index]
        ids = dict(zip(keys, tokens["input_ids"].to(torch.int64).split(counts)))
        self._masks = dict(zip(keys, tokens["loss_mask"].to(torch.bool).split(counts)))
        return ids, self._masks

    def _loss_mask(self, key: str) -> torch.Tensor:
        if self._masks is None:
            problem = _file_problem(self.path, TOKENS, self._done.get(TOKENS), checksum=self.verify_checksums)
            if problem:
                raise SystemExit(f"{self.path / TOKENS}: {problem}; no sample is usable without it. Fix: {FIX_SHARD}")
            self._tokens()
        return self._masks[key]

    def _last_hidden(self, f, key: str, n: int) -> torch.Tensor:
        """[T, H] fp32: the stored teacher rows in place, zeros at the rows training never reads."""
        last = _read_features(f, f"{key}.last_hidden")
        if self.teacher_steps is None:          # format 2: every row stored
            return last
        rows = teacher_rows(self._loss_mask(key), self.teacher_steps)
        if rows.numel() != n or int(rows.sum()) != last.shape[0]:
            raise ValueError(f"{key}.last_hidden holds {last.shape[0]} rows, its loss mask ({rows.numel()} tokens) "
                             f"marks {int(rows.sum())}")
        full = last.new_zeros(n, last.shape[-1])
        full[rows] = last
        return full

    def load(self, key: str) -> TargetFeatures:
        """One sample's features (fp32). DataError when its shard is bad: the caller skips the sample."""
        row = self._rows[key]
        shard = row["shard"]
        if shard not in self.bad_shards:
            # the checksum reads the whole shard, so once per shard and store
            check = self.verify_checksums and shard not in self._verified
            problem = _file_problem(self.path, shard, self._done.get(shard), checksum=check)
            if problem is None:
                self._verified.add(shard)
                try:
                    with safe_open(str(self.path / shard), "pt") as f:
                        aux = _read_features(f, f"{key}.aux")
                        last = self._last_hidden(f, key, aux.shape[0])
                        pos = f.get_tensor(f"{key}.positions").to(torch.int64)
                    pos = pos[None] if pos.dim() == 1 else pos[:, None]          # [1, T] or [3, 1, T]
                    return TargetFeatures(aux=aux[None], last_hidden=last[None], positions=pos, head=self._head)
                except Exception as e:  # noqa: BLE001
                    problem = f"unreadable: {type(e).__name__}: {e}"
            self._bad(shard, problem)
        err = self.bad_shards[shard]
        raise DataError(err.where, f"sample {key} (id {row['id']}, {row['where']}): {err.message}", FIX_SHARD)


# ------------------------------------------------------------------------------------------ command line
def _main(args) -> int:
    from eagle3_plugin.families import family_for_target
    from .data import LoadReport, Tokenizer
    from .dist import setup
    tcfg = model_config(args.target)
    fam = family_for_target(tcfg)
    aux = list(fam.aux_layer_ids(tcfg, args.aux_layer_ids))
    # refuse a mismatching folder before the (long) tokenising. Rank 0 only: torchrun stops the other ranks when
    # it exits, and no rank then reads the folder while rank 0 is writing it
    if _rank_and_world()[0] == 0:
        check_output(args.output, args.target, aux, data=args.data, max_length=args.max_length,
                     storage=args.storage, overwrite=args.overwrite, teacher_steps=args.ttt_steps)
    d = setup(args.device)                  # under torchrun: the process group dump_features' barriers use
    report = LoadReport()
    samples, media = stream_samples(args.data, Tokenizer(args.target, fam), args.max_length, report,
                                    args.data_workers)
    if d.main:
        for e in report.errors:
            print(f"warning: {e}")
        print(f"data: {report.summary()}")
    dump_features(args.target, samples, args.output, aux, progress=d.main, data=args.data,
                  max_length=args.max_length, device=str(d.device), storage=args.storage, overwrite=args.overwrite,
                  teacher_steps=args.ttt_steps, media=media)
    return 0


def stream_samples(data, tok, max_length: int, report, workers: int):
    """The data's samples without their processor outputs (tokens and loss masks only: what planning the shards
    needs), and the `media` callback that processes a shard's media again when it is dumped, so a data set's pixel
    values and audio features are never all in memory (stream.py)."""
    from dataclasses import replace
    from .stream import StreamedSamples, index_jsonl
    entries = index_jsonl(data, report, tok)
    streamed = StreamedSamples(tok, max_length, report, workers)
    samples, entry_of = [], {}           # sample id -> the entry whose media it needs
    for entry, got in zip(entries, streamed.stream(entries)):
        for s in got:
            if s.mm_inputs:
                entry_of[s.id] = entry
            samples.append(replace(s, mm_inputs={}))

    def media(shard: list) -> list:
        wanted = {entry_of[s.id].where: entry_of[s.id] for s in shard if s.id in entry_of}
        if not wanted:
            return shard
        full = {s.id: s for got in streamed.stream(list(wanted.values())) for s in got}
        gone = [s.where for s in shard if s.id in entry_of and s.id not in full]
        if gone:
            raise SystemExit(f"{gone[0]}: this conversation could not be encoded again while dumping its shard "
                             f"(its line or media changed during the run); restore it and run the same command "
                             f"again (it resumes)")
        return [full.get(s.id, s) for s in shard]
    return samples, media


def configure_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `dump-features` subcommand to an argparse subparsers object."""
    df = subparsers.add_parser("dump-features", help="run the target once over the data and store the draft's "
                               "features (resumable; train from them with `train --features`)",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    df.add_argument("--target", required=True, help="target model folder or Hub id")
    df.add_argument("--data", required=True, help="conversations jsonl")
    df.add_argument("--output", "-o", required=True, help="features folder: new, empty, or the same run to resume")
    df.add_argument("--max-length", type=int, default=2048, help="longer conversations are truncated")
    df.add_argument("--data-workers", type=int, default=2, help="DataLoader processes that render and process "
                                                                "conversations (0: in this process)")
    df.add_argument("--aux-layer-ids", type=int, nargs=3, metavar=("LOW", "MID", "HIGH"),
                    help="default: the family's")
    df.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto: cuda:LOCAL_RANK if available (bf16 target), else cpu (fp32)")
    df.add_argument("--storage", choices=STORAGES, default="bf16",
                    help="int8: about half the disk of bf16, under 1%% relative error (see the module doc)")
    df.add_argument("--ttt-steps", type=int, default=TEACHER_STEPS, metavar="N",
                    help="the longest TTT unroll you will train with (train --ttt-steps): the last hidden state is "
                         "stored only where training reads it, before assistant tokens and up to N-1 tokens past "
                         "an assistant turn (the simulated-acceptance chains); more steps keep the loss exact")
    df.add_argument("--overwrite", action="store_true",
                    help="start over in --output (deletes only the files a dump wrote there)")
    df.set_defaults(func=_main)
    return df
