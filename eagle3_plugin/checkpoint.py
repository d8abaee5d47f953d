"""THE EAGLE-3 draft checkpoint format: build its config, write it atomically, read it, validate it.

One directory, loaded as-is by vLLM (``--speculative-config '{"method":"eagle3","model":DIR}'``) and SGLang
(``--speculative-draft-model-path DIR``):

  config.json        Llama-style config (model_type "llama", 1 layer) + the EAGLE-3 fields below
  model.safetensors  midlayer.*, fc.weight, norm.weight, lm_head.weight, [d2t int64, t2d bool if the vocab is pruned]

Aux layer ids are written twice because the engines disagree on their meaning:
  * top-level ``eagle_aux_hidden_state_layer_ids``: vLLM's convention, id L = residual stream entering layer L
    (== HF ``hidden_states[L]``). vLLM reads this key first.
  * ``eagle_config.eagle_aux_hidden_state_layer_ids``: SGLang's convention, id i = output of layer i, i.e. SGLang
    captures the input of layer i+1. So we store ``L - 1`` there. SGLang reads only this key.
Both therefore capture the same tensors.

``d2t`` holds offsets (target_id = draft_id + d2t[draft_id]); vLLM refuses a ``d2t`` when the draft vocab is the
full vocab, so the maps are written only for a pruned vocab.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .families import FAMILIES, TargetFamily, family_for_draft, family_for_target

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


# --------------------------------------------------------------------------------------------------- config
def build_draft_config(target_cfg: Mapping[str, Any], *, family: TargetFamily | None = None,
                       aux_layer_ids: tuple[int, ...] | None = None, draft_vocab_size: int | None = None,
                       norm_before_residual: bool = False, extra: Mapping[str, Any] | None = None) -> dict:
    """The draft's config.json for a target (its config.json as a dict). Layer shapes copy one target layer."""
    fam = family or family_for_target(target_cfg)
    tc = fam.text_config(target_cfg)
    vocab = int(tc["vocab_size"])
    hidden = int(tc["hidden_size"])
    n_heads = int(tc["num_attention_heads"])
    aux = tuple(aux_layer_ids or fam.default_aux_layer_ids(target_cfg))
    check_aux_layer_ids(aux, fam.num_layers(target_cfg))
    cfg: dict[str, Any] = {
        "architectures": [fam.draft_architecture],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(tc["intermediate_size"]),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(tc.get("num_key_value_heads") or n_heads),
        "head_dim": int(tc.get("head_dim") or hidden // n_heads),
        "num_hidden_layers": 1,
        "hidden_act": tc.get("hidden_act", "silu"),
        "rms_norm_eps": float(tc.get("rms_norm_eps", 1e-6)),
        "max_position_embeddings": int(tc.get("max_position_embeddings", 32768)),
        "vocab_size": vocab,
        "draft_vocab_size": int(draft_vocab_size or vocab),
        "target_hidden_size": hidden,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "norm_before_residual": bool(norm_before_residual),
        "norm_before_fc": False,
        "eagle_aux_hidden_state_layer_ids": list(aux),
        "eagle_config": {"eagle_aux_hidden_state_layer_ids": [i - 1 for i in aux], "use_aux_hidden_state": True},
        "torch_dtype": "bfloat16",
        "eagle3_plugin": {"format_version": FORMAT_VERSION, "family": fam.name, "positions": fam.positions,
                          "target_architecture": (target_cfg.get("architectures") or [None])[0],
                          "target_num_layers": fam.num_layers(target_cfg),
                          "placeholder_token_ids": list(fam.placeholder_token_ids(target_cfg))},
    }
    cfg.update(fam.rope_for_draft(target_cfg))
    if extra:
        cfg.update(extra)
    return cfg


def check_aux_layer_ids(ids: tuple[int, ...] | list[int], num_layers: int) -> None:
    if len(ids) != 3:
        raise ValueError(f"EAGLE-3 needs exactly 3 aux layer ids, got {list(ids)}")
    if list(ids) != sorted(set(ids)):
        raise ValueError(f"aux layer ids must be distinct and ascending, got {list(ids)}")
    if not all(1 <= i < num_layers for i in ids):
        raise ValueError(f"aux layer ids {list(ids)} out of range for a {num_layers}-layer target: "
                         f"each id L names the input of layer L, so 1 <= L <= {num_layers - 1}")


def aux_layer_ids(draft_cfg: Mapping[str, Any]) -> tuple[int, ...] | None:
    """Aux ids in vLLM's convention, from either key (the top-level one wins, as in vLLM)."""
    if draft_cfg.get("eagle_aux_hidden_state_layer_ids"):
        return tuple(int(i) for i in draft_cfg["eagle_aux_hidden_state_layer_ids"])
    ec = draft_cfg.get("eagle_config") or {}
    if ec.get("eagle_aux_hidden_state_layer_ids"):   # SGLang convention -> shift
        return tuple(int(i) + 1 for i in ec["eagle_aux_hidden_state_layer_ids"])
    return None


# --------------------------------------------------------------------------------------------------- weights
def expected_shapes(cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor the engines read, with its shape, for a 1-layer Llama EAGLE-3 draft config."""
    h = int(cfg["hidden_size"])
    i = int(cfg["intermediate_size"])
    nh, nkv = int(cfg["num_attention_heads"]), int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"])
    hd = int(cfg.get("head_dim") or h // nh)
    th = int(cfg.get("target_hidden_size") or h)
    vocab, dvocab = int(cfg["vocab_size"]), int(cfg.get("draft_vocab_size") or cfg["vocab_size"])
    n_aux = len(aux_layer_ids(cfg) or (0, 0, 0))
    p = "midlayer."
    shapes = {
        p + "input_layernorm.weight": (h,), p + "hidden_norm.weight": (h,),
        p + "post_attention_layernorm.weight": (h,),
        p + "self_attn.q_proj.weight": (nh * hd, 2 * h), p + "self_attn.k_proj.weight": (nkv * hd, 2 * h),
        p + "self_attn.v_proj.weight": (nkv * hd, 2 * h), p + "self_attn.o_proj.weight": (h, nh * hd),
        p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i),
        "fc.weight": (h, n_aux * th), "norm.weight": (h,), "lm_head.weight": (dvocab, h),
    }
    if dvocab != vocab:
        shapes["d2t"] = (dvocab,)
        shapes["t2d"] = (vocab,)
    return shapes


def save_draft(out_dir: str | os.PathLike, cfg: Mapping[str, Any], tensors: Mapping[str, Any],
               extra_files: Mapping[str, str] | None = None, keep: tuple[str, ...] = ()) -> Path:
    """Write config.json + model.safetensors atomically: a temp dir next to ``out_dir``, then a rename.
    A reader never sees a half-written draft, and a crash leaves the previous one intact. Entries named in
    ``keep`` (e.g. the trainer's state folder) are carried over from the previous directory."""
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    problems = validate_tensors(cfg, {k: tuple(v.shape) for k, v in tensors.items()},
                                {k: str(v.dtype) for k, v in tensors.items()})
    if problems:
        raise ValueError("refusing to write an invalid draft:\n  " + "\n  ".join(problems))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[
            cfg.get("torch_dtype", "bfloat16")]
        clean = {}
        for k, v in tensors.items():
            v = v.detach().to("cpu")
            clean[k] = (v if k in ("d2t", "t2d") else v.to(dtype)).contiguous()
        save_file(clean, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=False) + "\n")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        for name in keep:
            if (out / name).exists():
                os.replace(out / name, tmp / name)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename src over dst; if dst exists it is moved aside first and removed only after the swap."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def load_draft(path: str | os.PathLike, device: str = "cpu") -> tuple[dict, dict]:
    from safetensors.torch import load_file
    p = Path(path)
    cfg = read_config(p / CONFIG_NAME)
    return cfg, load_file(str(p / WEIGHTS_NAME), device=device)


def read_config(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: not found (a draft directory needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None


# --------------------------------------------------------------------------------------------------- checks
@dataclass
class Finding:
    level: str   # "error" | "warning"
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def validate_tensors(cfg: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                     dtypes: Mapping[str, str] | None = None) -> list[str]:
    """Problems with a set of tensor names/shapes against a draft config (empty list = fine)."""
    problems = []
    want = expected_shapes(cfg)
    allowed_extra = {"embed_tokens.weight"}
    for name, shape in want.items():
        if name not in shapes:
            hint = (" (a pruned draft vocab needs the d2t/t2d maps)" if name in ("d2t", "t2d") else "")
            problems.append(f"missing tensor {name!r} {list(shape)}{hint}")
        elif tuple(shapes[name]) != shape:
            problems.append(f"tensor {name!r} has shape {list(shapes[name])}, config.json implies {list(shape)}")
    for name in shapes:
        if name not in want and name not in allowed_extra:
            if name in ("d2t", "t2d"):
                problems.append(f"tensor {name!r} present but draft_vocab_size == vocab_size: vLLM refuses a "
                                f"d2t for a full-vocab draft; drop it or prune the vocab")
            else:
                problems.append(f"unexpected tensor {name!r}: engines fail or silently ignore it")
    if dtypes:
        if "d2t" in dtypes and dtypes["d2t"] not in ("torch.int64", "int64", "I64"):
            problems.append(f"d2t must be int64 offsets, got {dtypes['d2t']}")
        if "t2d" in dtypes and dtypes["t2d"] not in ("torch.bool", "bool", "BOOL"):
            problems.append(f"t2d must be bool, got {dtypes['t2d']}")
    return problems


def validate(draft_dir: str | os.PathLike, target_cfg: Mapping[str, Any] | None = None) -> list[Finding]:
    """Everything `eagle3-train check` verifies. Reads headers only, never the whole weights file."""
    from safetensors import safe_open

    d = Path(draft_dir)
    out: list[Finding] = []
    err = lambda m: out.append(Finding("error", m))  # noqa: E731
    try:
        cfg = read_config(d / CONFIG_NAME)
    except (FileNotFoundError, ValueError) as e:
        return [Finding("error", str(e))]
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "vocab_size", "draft_vocab_size"):
        if key not in cfg:
            err(f"{d / CONFIG_NAME}: missing field {key!r}")
    if out:
        return out
    arch = (cfg.get("architectures") or [""])[0]
    if not (arch.startswith("Eagle3") or arch.endswith("Eagle3")):
        err(f"{d / CONFIG_NAME}: architectures[0] = {arch!r}: vLLM rewrites it to 'Eagle3{arch}'; "
            f"use 'LlamaForCausalLMEagle3' or a family name such as 'Eagle3Qwen3VLForCausalLM'")
    if cfg.get("num_hidden_layers", 1) != 1:
        out.append(Finding("warning", f"num_hidden_layers = {cfg['num_hidden_layers']}; only 1-layer drafts are "
                                      f"loadable by every supported engine version"))
    wpath = d / WEIGHTS_NAME
    if not wpath.exists():
        err(f"{wpath}: not found")
        return out
    try:
        with safe_open(str(wpath), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
            d2t = f.get_tensor("d2t") if "d2t" in shapes else None
            t2d = f.get_tensor("t2d") if "t2d" in shapes else None
    except Exception as e:  # corrupt header / truncated file
        err(f"{wpath}: not a readable safetensors file ({e})")
        return out
    out += [Finding("error", f"{wpath}: {p}") for p in validate_tensors(cfg, shapes, dtypes)]
    if d2t is not None and t2d is not None and d2t.ndim == 1 and t2d.ndim == 1:
        import torch
        target_ids = torch.arange(d2t.numel()) + d2t
        vocab = int(cfg["vocab_size"])
        if target_ids.min() < 0 or target_ids.max() >= vocab:
            err(f"{wpath}: d2t maps draft ids outside the target vocab [0, {vocab})")
        elif target_ids.unique().numel() != target_ids.numel():
            err(f"{wpath}: d2t maps two draft ids to the same target id")
        elif t2d.sum().item() != d2t.numel() or not bool(t2d[target_ids].all()):
            err(f"{wpath}: t2d is not the indicator of d2t's target ids (t2d has {int(t2d.sum())} true entries, "
                f"d2t has {d2t.numel()}); the maps are from different vocabularies")
    aux = aux_layer_ids(cfg)
    if aux is None:
        out.append(Finding("warning", "no eagle_aux_hidden_state_layer_ids: the engines fall back to their "
                                      "default layers, which must be the ones the draft was trained on"))
    if target_cfg is not None:
        out += _check_against_target(cfg, target_cfg, aux, d / CONFIG_NAME)
    return out


def _check_against_target(cfg, target_cfg, aux, where) -> list[Finding]:
    out: list[Finding] = []
    try:
        fam = family_for_target(target_cfg)
    except ValueError as e:
        return [Finding("error", str(e))]
    tc = fam.text_config(target_cfg)
    n = fam.num_layers(target_cfg)
    if aux is not None:
        try:
            check_aux_layer_ids(aux, n)
        except ValueError as e:
            out.append(Finding("error", f"{where}: {e}"))
        ec = (cfg.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
        top = cfg.get("eagle_aux_hidden_state_layer_ids")
        if ec and top and [i - 1 for i in top] != list(ec):
            out.append(Finding("error", f"{where}: eagle_config.eagle_aux_hidden_state_layer_ids {ec} must be the "
                                        f"top-level ids minus one ({[i - 1 for i in top]}): SGLang counts layer "
                                        f"outputs, vLLM layer inputs; otherwise the engines capture different layers"))
    for key, tkey in (("vocab_size", "vocab_size"), ("target_hidden_size", "hidden_size")):
        if key in cfg and int(cfg[key]) != int(tc[tkey]):
            out.append(Finding("error", f"{where}: {key} = {cfg[key]} but the target's {tkey} is {tc[tkey]}"))
    if int(cfg["hidden_size"]) != int(tc["hidden_size"]):
        out.append(Finding("error", f"{where}: hidden_size {cfg['hidden_size']} != target hidden {tc['hidden_size']}: "
                                    f"the draft shares the target's embedding"))
    dfam = family_for_draft(cfg)
    if dfam is not None and dfam.name != fam.name:
        out.append(Finding("error", f"{where}: draft was written for family {dfam.name!r} but the target is "
                                    f"{fam.name!r}"))
    arch = (cfg.get("architectures") or [""])[0]
    if dfam is None and arch not in fam.compatible_draft_architectures and arch != fam.draft_architecture:
        out.append(Finding("warning", f"{where}: architecture {arch!r} is not one we know for {fam.name} targets"))
    wants_mrope = bool((cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}).get("mrope_section"))
    if fam.positions == "mrope" and not wants_mrope and dfam is not None:
        out.append(Finding("error", f"{where}: {fam.name} drafts are trained on M-RoPE positions but the config "
                                    f"declares no rope_scaling.mrope_section, so engines feed 1-D positions"))
    if fam.positions != "mrope" and wants_mrope:
        out.append(Finding("error", f"{where}: mrope_section declared but {fam.name} drafts use 1-D positions"))
    return out


def family_of(cfg: Mapping[str, Any]) -> TargetFamily | None:
    return family_for_draft(cfg)


__all__ = ["build_draft_config", "save_draft", "load_draft", "read_config", "validate", "validate_tensors",
           "expected_shapes", "aux_layer_ids", "check_aux_layer_ids", "Finding", "FAMILIES"]
