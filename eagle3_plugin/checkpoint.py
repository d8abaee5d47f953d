"""THE EAGLE-3 draft checkpoint format: build its config, write it file by file atomically, read it, validate it.

One directory, loaded as-is by vLLM (``--speculative-config '{"method":"eagle3","model":DIR}'``) and SGLang
(``--speculative-draft-model-path DIR``):

  config.json        Llama-style config (model_type "llama", 1 layer) + the EAGLE-3 fields below
  model.safetensors  midlayer.*, fc.weight, norm.weight, lm_head.weight, [d2t int64, t2d bool if the vocab is pruned]
  .eagle3-output.json  our output marker (see outputs.py); the engines ignore it, as they ignore train_state/ and
                     any file a user adds

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .families import DRAFT_ARCHITECTURES, FAMILIES, TargetFamily, family_for_draft, family_for_target
from .outputs import atomic_write, claim_output_dir, record_written

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


# --------------------------------------------------------------------------------------------------- config
def build_draft_config(target_cfg: Mapping[str, Any], *, family: TargetFamily | None = None,
                       aux_layer_ids: tuple[int, ...] | None = None, draft_vocab_size: int | None = None,
                       norm_before_residual: bool = False, vllm_runner: str = "v1",
                       extra: Mapping[str, Any] | None = None) -> dict:
    """The draft's config.json for a target (its config.json as a dict). Layer shapes copy one target layer.
    `vllm_runner`: the vLLM model runner whose draft positions it is trained on (families.draft_positions)."""
    fam = family or family_for_target(target_cfg)
    tc = fam.text_config(target_cfg)
    vocab = int(tc["vocab_size"])
    hidden = int(tc["hidden_size"])
    n_heads = int(tc["num_attention_heads"])
    aux = fam.aux_layer_ids(target_cfg, aux_layer_ids)
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
        "eagle3_plugin": {"format_version": FORMAT_VERSION, "family": fam.name,
                          "positions": fam.draft_positions(vllm_runner), "vllm_runner": vllm_runner,
                          "target_architecture": (target_cfg.get("architectures") or [None])[0],
                          "target_num_layers": fam.num_layers(target_cfg),
                          "placeholder_token_ids": list(fam.placeholder_token_ids(target_cfg))},
    }
    cfg.update(fam.rope_for_draft(target_cfg, vllm_runner))
    if extra:
        cfg.update(extra)
    return cfg


def declares_mrope(draft_cfg: Mapping[str, Any]) -> bool:
    """Whether the engines feed this draft M-RoPE rows (vLLM's V1 runner and SGLang read ``mrope_section``)."""
    return bool((draft_cfg.get("rope_scaling") or draft_cfg.get("rope_parameters") or {}).get("mrope_section"))


def trained_positions(draft_cfg: Mapping[str, Any]) -> str:
    """The positions a draft was trained on (families.py): recorded by our trainer, else what its rope says."""
    recorded = (draft_cfg.get("eagle3_plugin") or {}).get("positions")
    return recorded or ("mrope" if declares_mrope(draft_cfg) else "1d")


def trained_runner(draft_cfg: Mapping[str, Any]) -> str:
    """The vLLM model runner a draft's positions are for (drafts written before it was recorded: V1)."""
    return (draft_cfg.get("eagle3_plugin") or {}).get("vllm_runner") or "v1"


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
               extra_files: Mapping[str, str] | None = None) -> Path:
    """Write model.safetensors, the ``extra_files`` (name -> text) and config.json into ``out_dir``.

    The folder must be missing, empty or a draft folder we wrote (``outputs.claim_output_dir``); nothing else in it
    is touched, so the trainer's state and a user's notes survive. Each file goes to a temp name and is renamed
    into place, config.json last: a reader that sees the new config also sees the new weights, and a crash leaves
    the previous files intact. Refuses tensors that are missing, misshapen or not finite."""
    import torch
    from safetensors.torch import save_file

    problems = validate_tensors(cfg, {k: tuple(v.shape) for k, v in tensors.items()},
                                {k: str(v.dtype) for k, v in tensors.items()})
    if problems:
        raise ValueError("refusing to write an invalid draft:\n  " + "\n  ".join(problems))
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[
        cfg.get("torch_dtype", "bfloat16")]
    clean = {}
    for k, v in tensors.items():
        v = v.detach().to("cpu")
        clean[k] = (v if k in ("d2t", "t2d") else v.to(dtype)).contiguous()
    # checked after the cast: float16 turns large finite values into inf
    bad = [k for k, v in clean.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"non-finite weights in {', '.join(bad)}: the training diverged (lower --lr)")
    out = claim_output_dir(out_dir, "draft")
    extra = dict(extra_files or {})
    record_written(out, WEIGHTS_NAME, *extra, CONFIG_NAME)
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(clean, str(tmp), metadata={"format": "pt"}))
    for name, text in extra.items():
        atomic_write(out / name, lambda tmp, text=text: tmp.write_text(text))
    atomic_write(out / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(cfg, indent=2, sort_keys=False) + "\n"))
    return out


def load_draft(path: str | os.PathLike, device: str = "cpu") -> tuple[dict, dict]:
    from safetensors.torch import load_file
    p = Path(path)
    cfg = read_folder_config(p, "draft")
    return cfg, load_file(str(p / WEIGHTS_NAME), device=device)


def read_config(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: not found (a draft directory needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None


def read_folder_config(folder: str | os.PathLike, what: str) -> dict:
    """config.json of a model folder (``what``: "draft" or "target"), with one clear ValueError when the path is
    missing, a file, a folder without config.json, or unreadable."""
    d = Path(folder)
    if not d.exists():
        raise ValueError(f"{d}: no such folder; give the {what} folder (it holds {CONFIG_NAME})")
    if not d.is_dir():
        hint = f" (did you mean its folder {d.parent}?)" if d.name in (CONFIG_NAME, WEIGHTS_NAME) else ""
        raise ValueError(f"{d}: is a file; give the {what} folder that holds {CONFIG_NAME}{hint}")
    if not (d / CONFIG_NAME).is_file():
        raise ValueError(f"{d}: no {CONFIG_NAME} here, so this is not a {what} folder")
    try:
        cfg = read_config(d / CONFIG_NAME)
    except OSError as e:
        raise ValueError(f"{d / CONFIG_NAME}: cannot read ({e.strerror or e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{d / CONFIG_NAME}: not a JSON object")
    return cfg


# --------------------------------------------------------------------------------------------------- checks
# Every config.json field an engine reads without a safe default, with why. A field missing here either crashes the
# engine at load or, worse, silently builds a draft unlike the one that was trained. Dotted names are nested keys.
REQUIRED_FIELDS: dict[str, dict[str, str]] = {
    "vllm": {
        "architectures": "selects the draft class (vLLM rewrites it to Eagle3<name>)",
        "model_type": "picks the transformers config class the draft config is parsed with",
        "hidden_size": "sizes every draft layer (LlamaConfig would use 4096)",
        "intermediate_size": "sizes the MLP (LlamaConfig would use 11008)",
        "num_attention_heads": "sizes q_proj and o_proj (LlamaConfig would use 32)",
        "num_key_value_heads": "sizes k_proj and v_proj (LlamaConfig falls back to num_attention_heads)",
        "head_dim": "sizes the heads; derived as hidden_size / num_attention_heads only if that divides",
        "rms_norm_eps": "LlamaConfig would use 1e-6, not necessarily the epsilon the draft was trained with",
        "rope_theta": "LlamaConfig would use 10000, another rotary embedding than the trained one",
        "max_position_embeddings": "vLLM < 0.27 limits the draft's context to it (LlamaConfig would use 2048)",
        "vocab_size": "draft logits are scattered into a (tokens, vocab_size) tensor; must be the target's vocab",
        "draft_vocab_size": "sizes lm_head and d2t; vLLM's default vocab_size is wrong for a pruned vocab",
        "target_hidden_size": "fc takes 3 x target_hidden_size; the default hidden_size is wrong when they differ",
        "num_hidden_layers": "LlamaConfig would build 32 draft layers",
        "hidden_act": "the MLP activation the draft was trained with",
        "norm_before_residual": "the default differs by format (HF false, speculators true): it must match training",
        "eagle_aux_hidden_state_layer_ids": "the target layers vLLM captures (the 0.32 V2 runner reads only this "
                                            "top-level key); without it the engine's default layers are used",
    },
    "sglang": {
        "architectures": "must equal a registered draft class name",
        "model_type": "picks the transformers config class the draft config is parsed with",
        "hidden_size": "sizes every draft layer",
        "intermediate_size": "sizes the MLP",
        "num_attention_heads": "sizes q_proj and o_proj",
        "num_key_value_heads": "sizes k_proj and v_proj",
        "head_dim": "sizes the heads",
        "rms_norm_eps": "LlamaConfig would use 1e-6, not necessarily the epsilon the draft was trained with",
        "rope_theta": "LlamaConfig would use 10000, another rotary embedding than the trained one",
        "max_position_embeddings": "bounds the draft's rotary cache",
        "vocab_size": "sizes the draft's embedding, which is swapped for the target's",
        "draft_vocab_size": "read as config.draft_vocab_size: a missing key raises AttributeError at load",
        "target_hidden_size": "fc takes 3 x target_hidden_size; when it differs the target embedding is not shared",
        "num_hidden_layers": "LlamaConfig would build 32 draft layers",
        "hidden_act": "the MLP activation the draft was trained with",
        "tie_word_embeddings": "true makes lm_head the target's embedding instead of the trained head",
        "eagle_config.eagle_aux_hidden_state_layer_ids": "the only aux-id key SGLang reads (layer outputs, i.e. "
                                                         "vLLM ids - 1); without it M-RoPE targets fail to start "
                                                         "and others capture their default layers",
    },
}


def _lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(cfg, Mapping):
            return None
        cfg = cfg.get(key)
    return cfg


def _field_problem(cfg: Mapping[str, Any], field: str, target_hidden: int | None) -> str | None:
    """Why ``field`` is unusable in ``cfg`` (None: fine). Most fields just have to be present; these are not."""
    value = _lookup(cfg, field)
    if field == "head_dim" and value is None:
        h, nh = cfg.get("hidden_size"), cfg.get("num_attention_heads")
        if isinstance(h, int) and isinstance(nh, int) and nh > 0 and h % nh == 0:
            return None
    if field == "rope_theta" and value is None:
        value = _lookup(cfg, "rope_parameters.rope_theta")
    if field == "target_hidden_size":
        # defaults to hidden_size, which is right unless the target says otherwise
        if value is None and target_hidden is not None and target_hidden != cfg.get("hidden_size"):
            return f"missing, and the target's hidden size {target_hidden} differs from hidden_size"
        return None
    if value is None:
        return "missing"
    if field == "tie_word_embeddings" and value is not False:
        return f"is {json.dumps(value)}, must be false"
    if field == "norm_before_residual" and not isinstance(value, bool):
        return f"is {json.dumps(value)}, must be true or false"
    return None


def check_config_fields(cfg: Mapping[str, Any], target_hidden: int | None = None) -> list[str]:
    """Problems with the fields of REQUIRED_FIELDS in a draft config (empty list = fine), one line each, naming
    the engines that need the field and why. ``target_hidden``: the target's hidden size, when known."""
    needed: dict[str, dict[str, list[str]]] = {}   # field -> reason -> engines giving it
    for engine, fields in REQUIRED_FIELDS.items():
        for field, reason in fields.items():
            needed.setdefault(field, {}).setdefault(reason, []).append(engine)
    problems = []
    for field, reasons in needed.items():
        problem = _field_problem(cfg, field, target_hidden)
        if problem:
            why = "; ".join(f"{', '.join(engines)}: {reason}" for reason, engines in reasons.items())
            problems.append(f"{field} {problem} ({why})")
    top = cfg.get("eagle_aux_hidden_state_layer_ids")
    nested = _lookup(cfg, "eagle_config.eagle_aux_hidden_state_layer_ids")
    if top and nested and [i - 1 for i in top] != list(nested):
        problems.append(f"eagle_config.eagle_aux_hidden_state_layer_ids {nested} must be the top-level ids minus one "
                        f"({[i - 1 for i in top]}): SGLang counts layer outputs, vLLM layer inputs; otherwise the "
                        f"engines capture different layers")
    return problems


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
    """Everything `eagle3-train check` verifies: the folder, the config fields both engines need, every tensor's
    name, shape and values (read one tensor at a time), the vocab maps, and with ``target_cfg`` the fit to it."""
    from safetensors import safe_open

    d = Path(draft_dir)
    out: list[Finding] = []
    err = lambda m: out.append(Finding("error", m))  # noqa: E731
    try:
        cfg = read_folder_config(d, "draft")
    except ValueError as e:
        return [Finding("error", str(e))]
    where = d / CONFIG_NAME
    fam, target_hidden = None, None
    if target_cfg is not None:
        try:
            fam = family_for_target(target_cfg)
            target_hidden = int(fam.text_config(target_cfg)["hidden_size"])
        except ValueError as e:   # still check the draft on its own
            err(str(e))
    for p in check_config_fields(cfg, target_hidden):
        if p.startswith(("eagle_aux_hidden_state_layer_ids missing", "eagle_config.eagle_aux_hidden_state_layer_ids "
                                                                      "missing")):
            # published drafts (e.g. AngelSlim's) rely on the engines' default layers, which they were trained on
            out.append(Finding("warning", f"{where}: {p}"))
        else:
            err(f"{where}: {p}")
    if any(k not in cfg for k in ("hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")):
        return out   # the tensor shapes cannot be derived
    arch = (cfg.get("architectures") or [""])[0]
    if not (arch.startswith("Eagle3") or arch.endswith("Eagle3")):
        err(f"{where}: architectures[0] = {arch!r}: vLLM rewrites it to 'Eagle3{arch}'; "
            f"use 'LlamaForCausalLMEagle3' or a family's draft name ({', '.join(DRAFT_ARCHITECTURES)})")
    if cfg.get("num_hidden_layers", 1) != 1:
        out.append(Finding("warning", f"num_hidden_layers = {cfg['num_hidden_layers']}; only 1-layer drafts are "
                                      f"loadable by every supported engine version"))
    if cfg.get("norm_before_residual") is True and family_for_draft(cfg) is None:
        out.append(Finding("warning", f"{where}: norm_before_residual is true, but SGLang ignores the field and "
                                      f"always adds the raw fc output: the draft only works in vLLM (our family draft "
                                      f"classes honour it in both engines)"))
    wpath = d / WEIGHTS_NAME
    if not wpath.exists():
        err(f"{wpath}: not found")
        return out
    try:
        with safe_open(str(wpath), framework="pt") as f:
            names = list(f.keys())
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in names}
            dtypes = {k: f.get_slice(k).get_dtype() for k in names}
            out += [Finding("error", f"{wpath}: {p}") for p in validate_tensors(cfg, shapes, dtypes)]
            nonfinite, maps = _scan_tensors(f, names)
    except Exception as e:  # corrupt header / truncated file
        err(f"{wpath}: not a readable safetensors file ({e})")
        return out
    if nonfinite:
        err(f"{wpath}: non-finite weights (NaN/Inf) in {', '.join(nonfinite)}: the training diverged (lower --lr "
            f"and train again)")
    out += _check_vocab_maps(cfg, maps.get("d2t"), maps.get("t2d"), wpath)
    if fam is not None:
        out += _check_against_target(cfg, target_cfg, fam, where)
    return out


def _scan_tensors(f, names: list[str]) -> tuple[list[str], dict]:
    """Read every tensor once, one at a time so a large draft never sits in memory whole: the names of float
    tensors holding NaN/Inf, and the vocab maps (kept, they are small)."""
    import torch
    nonfinite, maps = [], {}
    for k in names:
        t = f.get_tensor(k)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            nonfinite.append(k)
        if k in ("d2t", "t2d"):
            maps[k] = t
    return nonfinite, maps


def _check_vocab_maps(cfg, d2t, t2d, wpath) -> list[Finding]:
    if d2t is None or t2d is None or d2t.ndim != 1 or t2d.ndim != 1:
        return []   # absence and shapes are reported by validate_tensors
    import torch
    target_ids = torch.arange(d2t.numel()) + d2t
    vocab = int(cfg["vocab_size"])
    if target_ids.min() < 0 or target_ids.max() >= vocab:
        return [Finding("error", f"{wpath}: d2t maps draft ids outside the target vocab [0, {vocab})")]
    if target_ids.unique().numel() != target_ids.numel():
        return [Finding("error", f"{wpath}: d2t maps two draft ids to the same target id")]
    if t2d.numel() != vocab or t2d.sum().item() != d2t.numel() or not bool(t2d[target_ids].all()):
        return [Finding("error", f"{wpath}: t2d is not the indicator of d2t's target ids (t2d has {int(t2d.sum())} "
                                 f"true entries, d2t has {d2t.numel()}); the maps are from different vocabularies")]
    return []


def _check_against_target(cfg, target_cfg, fam: TargetFamily, where) -> list[Finding]:
    out: list[Finding] = []
    tc = fam.text_config(target_cfg)
    aux = aux_layer_ids(cfg)
    if aux is not None:
        try:
            check_aux_layer_ids(aux, fam.num_layers(target_cfg))
        except ValueError as e:
            out.append(Finding("error", f"{where}: {e}"))
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
    wants_mrope = declares_mrope(cfg)
    trained = trained_positions(cfg)
    if dfam is not None and trained != fam.draft_positions(trained_runner(cfg)):
        out.append(Finding("error", f"{where}: positions {trained!r} are not what {fam.name} drafts get on "
                                    f"vLLM's {trained_runner(cfg)} runner"))
    elif trained == "mrope" and not wants_mrope:
        out.append(Finding("error", f"{where}: {fam.name} drafts are trained on M-RoPE positions but the config "
                                    f"declares no rope_scaling.mrope_section, so engines feed 1-D positions"))
    elif trained != "mrope" and wants_mrope:
        out.append(Finding("error", f"{where}: mrope_section declared but this draft was trained on "
                                    f"{trained!r} positions"))
    return out


__all__ = ["build_draft_config", "save_draft", "load_draft", "read_config", "read_folder_config", "validate",
           "validate_tensors", "check_config_fields", "REQUIRED_FIELDS", "expected_shapes", "aux_layer_ids",
           "declares_mrope", "trained_positions", "trained_runner",
           "check_aux_layer_ids", "Finding", "FAMILIES"]
