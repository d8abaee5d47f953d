"""The training recipe as data: one dataclass holds every field and its default; the command-line flags, the recipe
file (``--config recipe.yaml|json``) and the copy stored with a run are all made from it.

Precedence: defaults < recipe file < flags given on the command line. A run stores its resolved config in
``OUTPUT/train_state``; a re-run compares the fields in ``RUN_IDENTITY`` and refuses to "resume" a different run.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import os
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def _opt(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    target: str = _opt("", "target model: a folder (HF format) or a Hub id", required=True)
    output: str = _opt("", "draft folder to write (vLLM and SGLang load it directly); a re-run resumes it",
                       required=True, short="-o")
    data: str | None = _opt(None, "training conversations (jsonl, seed format): online training")
    features: str | None = _opt(None, "features folder from `eagle3-train dump-features`: offline training")
    eval_data: str | None = _opt(None, "held-out conversations (default: --eval-fraction of --data)")
    eval_fraction: float = _opt(0.05, "share of --data held out for evaluation when no --eval-data is given")
    max_steps: int = _opt(0, "optimizer steps (0: --num-epochs over the data)")
    num_epochs: int = _opt(1, "epochs when --max-steps is 0")
    data_workers: int = _opt(2, "DataLoader processes that render and process conversations ahead of the "
                                "training step (0: in the training process)")
    max_length: int = _opt(2048, "tokens per conversation (media are never cut)")
    chat_template: str | None = _opt(None, "chat template file (or text) the engine serves with, if not the "
                                           "target's own (like vLLM's --chat-template)")
    chat_template_kwargs: str | None = _opt(None, "JSON of template variables the engine passes, e.g. "
                                                  "'{\"enable_thinking\": false}'")
    serve_engine: str = _opt("vllm", "the engine whose chat rendering the samples reproduce",
                             choices=("vllm", "sglang"))
    vllm_runner: str = _opt("v1", "the vLLM model runner the draft will be served on, whose positions it trains "
                                  "on: v1 (CPU; GPU with VLLM_USE_V2_MODEL_RUNNER=0) or v2 (the GPU default). "
                                  "Only Qwen3-VL drafts differ; SGLang serves either", choices=("v1", "v2"))
    render_check: int = _opt(4, "conversations rendered through vLLM's own chat code at start-up and compared "
                                "token by token (0: off; needs vllm installed)")
    lr: float = _opt(1e-3, "peak learning rate (AdamW over fp32 master weights)")
    min_lr_ratio: float = _opt(0.1, "the cosine schedule ends at lr * min_lr_ratio")
    warmup_steps: int = _opt(20, "linear warm-up steps")
    batch_size: int = _opt(1, "conversations per optimizer step")
    batch_tokens: int = _opt(0, "padded tokens per target/draft forward: the step's conversations are grouped by "
                                "length into forwards of at most this many (0: one conversation per forward; "
                                "must be >= --max-length)")
    ttt_steps: int = _opt(7, "training-time-test unroll length")
    ttt_decay: float = _opt(0.8, "loss weight decay per unroll step")
    draft_vocab_size: int = _opt(32000, "draft vocabulary (most frequent training targets)")
    init_draft: str | None = _opt(None, "fine-tune from this EAGLE-3 draft folder (ours, or a published one in the "
                                        "Llama EAGLE-3 layout): its weights, draft vocab and aux layers")
    lm_head_init: str = _opt("target", "start the draft head from the target's lm_head rows, or from random",
                             choices=("target", "random"))
    grad_clip: float = _opt(0.5, "gradient norm clip")
    seed: int = _opt(0, "seed of the draft init, data order and eval split")
    eval_every: int = _opt(100, "evaluate every N steps (the best draft by eval is what OUTPUT holds)")
    save_every: int = _opt(100, "save the resumable training state every N steps")
    log_dir: str | None = _opt(None, "TensorBoard folder (default OUTPUT/train_state/tb)")
    wandb_project: str | None = _opt(None, "also log to Weights & Biases")
    progress: bool = _opt(True, "show a progress bar")
    aux_layer_ids: list[int] | None = _opt(None, "3 target layers feeding the draft (default: the family's)",
                                           nargs=3)
    device: str = _opt("auto", "auto (cuda:LOCAL_RANK if available), cuda or cpu")
    deepspeed: str | None = _opt(None, "DeepSpeed ZeRO for the draft's optimizer state: zero1, zero2 or a JSON "
                                       "config (run under torchrun; --batch-size must divide by the processes)")
    overwrite: bool = _opt(False, "start over: replace what eagle3-train wrote in OUTPUT (never other files)")


# Fields whose change makes a re-run a different run (refused unless --overwrite); the rest may change on resume.
# The target, data and features count by content (run_identity), so moving a file does not break a resume.
RUN_IDENTITY = ("eval_fraction", "max_length", "chat_template", "chat_template_kwargs", "serve_engine", "vllm_runner",
                "lr", "min_lr_ratio",
                "warmup_steps", "batch_size", "ttt_steps", "ttt_decay", "draft_vocab_size", "lm_head_init",
                "grad_clip", "seed", "aux_layer_ids", "deepspeed", "max_steps", "num_epochs")
PATH_FIELDS = ("data", "features", "eval_data")


class ConfigError(SystemExit):
    """A bad recipe file or value (one line on the command line)."""


def _base_type(tp):
    """str | None -> str; list[int] | None -> list[int]."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType")) else tp


def _types() -> dict[str, Any]:
    return {k: _base_type(v) for k, v in typing.get_type_hints(TrainConfig).items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (defaults shown from the dataclass), plus --config."""
    parser.add_argument("--config", metavar="RECIPE", help="recipe file (.yaml/.yml/.json) of TrainConfig fields; "
                                                           "flags given on the command line win")
    types = _types()
    for f in dataclasses.fields(TrainConfig):
        tp, meta = types[f.name], f.metadata
        names = [f"--{f.name.replace('_', '-')}"] + ([meta["short"]] if "short" in meta else [])
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              "help": f"{meta['help']} (default: {f.default})"}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is list:
            kw.update(type=typing.get_args(tp)[0], nargs=meta.get("nargs", "+"))
        else:
            kw["type"] = tp
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        parser.add_argument(*names, **kw)


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe file as a dict, checked against TrainConfig: unknown keys and wrong types are errors naming them."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"--config {p}: cannot read it ({e.strerror})") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - yaml and json raise their own types
        raise ConfigError(f"--config {p}: not valid {p.suffix.lstrip('.') or 'JSON'} ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: expected a mapping of TrainConfig fields, got {type(data).__name__}")
    return check_values(data, str(p))


def check_values(values: dict[str, Any], where: str) -> dict[str, Any]:
    types = _types()
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=1)
            raise ConfigError(f"{where}: unknown field {key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")
                              + "; fields are those of `eagle3-train train --help`")
        out[name] = _coerce(value, types[name], f"{where}: field {key!r}")
    return out


def _coerce(value, tp, where: str):
    if value is None:
        return None
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, typing.get_args(tp)[0], where) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):   # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, tp) or isinstance(value, bool) and tp is not bool:
        raise ConfigError(f"{where} must be {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_recipe(args.config))
    values.update({k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__})
    missing = [k for k in ("target", "output") if not values.get(k)]
    if missing:
        raise ConfigError(f"eagle3-train train: give --{missing[0]} (on the command line or in the recipe)")
    if not (values.get("data") or values.get("features")):
        raise ConfigError("eagle3-train train: give --data JSONL (online) or --features DIR (offline)")
    return TrainConfig(**values)


def file_fingerprint(path: str | None) -> str | None:
    """size + sha256 of a file (data), or of a folder's config.json / manifest (target, features)."""
    if not path:
        return None
    p = Path(path)
    if p.is_dir():
        p = next((p / n for n in ("config.json", "manifest.json", "meta.json") if (p / n).exists()), p)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{p.stat().st_size}:{h.hexdigest()[:16]}"


def run_identity(cfg: TrainConfig) -> dict[str, Any]:
    """What makes a run this run: the identity fields, with file contents (not just names) for data and target."""
    d = asdict(cfg)
    out = {k: d[k] for k in RUN_IDENTITY}
    for k in PATH_FIELDS + ("target",):
        out[f"{k}_content"] = file_fingerprint(d[k])
    if d["init_draft"]:        # a draft is its weights
        out["init_draft_content"] = file_fingerprint(str(Path(d["init_draft"]) / "model.safetensors"))
    return out


def identity_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(current))
    return [f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in keys if stored.get(k) != current.get(k)]
