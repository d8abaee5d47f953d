"""A live transformers target -> the features a draft trains on: aux states, target logits, draft positions.

Aux states are captured exactly where the engines capture them: id L = the residual stream *entering* decoder
layer L (a forward pre-hook on that layer). For Qwen3-VL this includes the deepstack features added after layers
0..k, which HF ``output_hidden_states`` does not (it records layer outputs before the deepstack add).

Positions are the ones the engines feed the draft (families.py): the target's own 3-row M-RoPE ids for Qwen3-VL
(captured from what the language model receives), row 0 of HunYuanVL's XD-RoPE ids (= the running index), and the
running index for text and audio targets. Features keep the M-RoPE rows; `served_positions` turns them into what a
draft trained for vLLM's V2 runner gets (the running index), so one dump serves drafts for either runner.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from eagle3_plugin.families import TargetFamily, family_for_target
from eagle3_plugin.models import model_config, resolve_model


def model_class(fam: TargetFamily):
    """The transformers class a family's target loads with (the family table names it)."""
    import transformers
    return getattr(transformers, fam.hf_model_class)


def decoder_layers(model) -> torch.nn.ModuleList:
    """The text decoder's layer list, whatever the wrapper nesting."""
    for path in ("model.language_model.layers", "language_model.model.layers", "model.layers",
                 "language_model.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the text decoder layers of {type(model).__name__}")


def language_model(model) -> torch.nn.Module:
    layers = decoder_layers(model)
    for m in model.modules():
        if getattr(m, "layers", None) is layers:
            return m
    raise ValueError("no module owns the decoder layers")


@dataclass
class TargetFeatures:
    aux: torch.Tensor          # [B, T, n_aux * H]   concatenated in ascending layer order
    last_hidden: torch.Tensor  # [B, T, H]           final normed hidden state (the lm_head input)
    positions: torch.Tensor    # [B, T] or [3, B, T] what the engines feed the draft
    head: torch.Tensor         # [V, H]              the target's lm_head weight

    def logits(self) -> torch.Tensor:
        """Full-vocab target logits (fp32). Training never builds them: see ttt.target_distribution."""
        return self.last_hidden.float() @ self.head.float().T


def served_positions(features: TargetFeatures, draft_positions: str) -> TargetFeatures:
    """`features` with the positions a draft trained on `draft_positions` (families.draft_positions) receives:
    every scheme but "mrope" is the running index (rows are right-padded, so it is right for each row)."""
    if draft_positions == "mrope" or features.positions.dim() == 2:
        return features
    _, B, T = features.positions.shape
    running = torch.arange(T, device=features.positions.device).expand(B, T).clone()
    return TargetFeatures(aux=features.aux, last_hidden=features.last_hidden, positions=running, head=features.head)


class _HeadInput(torch.nn.Module):
    """Stands in for the lm_head during feature extraction: records its input and returns a 1-wide stub, so the
    target never materialises [T, vocab] logits (GBs at long context with a 150k vocab)."""

    def __init__(self):
        super().__init__()
        self.seen = None

    def forward(self, x):
        self.seen = x.detach()
        return x[..., :1]


class Target:
    """Loads a target directory once and computes features for processor outputs."""

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu"):
        self.path = resolve_model(path)
        self.config = model_config(self.path)
        self.family = family_for_target(self.config)
        try:
            model = model_class(self.family).from_pretrained(str(self.path), dtype=dtype)
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:   # truncated/corrupt weights, shapes
            raise SystemExit(f"{self.path}: cannot load the target's weights ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:300]}); re-download or re-save the model") from None
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = device
        self.layers = decoder_layers(self.model)
        self.lm = language_model(self.model)
        head = self.model.get_output_embeddings()
        name = next(n for n, m in self.model.named_modules() if m is head)       # e.g. "lm_head"
        owner, _, attr = name.rpartition(".")
        self._head_slot = (self.model.get_submodule(owner) if owner else self.model, attr)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def embed_weight(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight.detach()

    def lm_head_weight(self) -> torch.Tensor:
        return self.model.get_output_embeddings().weight.detach()

    @torch.no_grad()
    def features(self, inputs: dict, aux_layer_ids) -> TargetFeatures:
        """inputs: processor/tokenizer outputs (input_ids [B, T], attention_mask, pixel_values, ...)."""
        captured: dict[int, torch.Tensor] = {}
        seen: dict[str, torch.Tensor] = {}
        hooks = []
        for lid in aux_layer_ids:
            if not 1 <= lid < self.num_layers:
                raise ValueError(f"aux layer id {lid} invalid for a {self.num_layers}-layer target")

            def pre(_m, args, kwargs, _lid=lid):
                h = args[0] if args else kwargs["hidden_states"]
                captured[_lid] = h.detach()
            hooks.append(self.layers[lid].register_forward_pre_hook(pre, with_kwargs=True))

        def lm_pre(_m, args, kwargs):
            if kwargs.get("position_ids") is not None:
                seen["position_ids"] = kwargs["position_ids"].detach()
        hooks.append(self.lm.register_forward_pre_hook(lm_pre, with_kwargs=True))

        head = self.model.get_output_embeddings()
        parent, attr = self._head_slot
        stub = _HeadInput()
        setattr(parent, attr, stub)
        try:
            inputs = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
            self.model(**inputs, use_cache=False)
        finally:
            setattr(parent, attr, head)
            for h in hooks:
                h.remove()
        aux = torch.cat([captured[i] for i in aux_layer_ids], dim=-1)
        return TargetFeatures(aux=aux, last_hidden=stub.seen, positions=self.draft_positions(inputs, seen),
                              head=head.weight.detach())

    def draft_positions(self, inputs: dict, seen: dict) -> torch.Tensor:
        ids = inputs["input_ids"]
        B, T = ids.shape
        running = torch.arange(T, device=ids.device).expand(B, T)
        if self.family.positions == "mrope":
            pos = seen.get("position_ids")
            if pos is None:        # text-only prompt: every M-RoPE row is the running index
                return running.unsqueeze(0).expand(3, B, T).clone()
            if pos.dim() == 2:
                return pos.unsqueeze(0).expand(3, B, T).clone()
            return pos[-3:].clone()   # [4, B, T] = (text row, T, H, W) in transformers >= 5
        return running.clone()        # "1d" and "row0" (HunYuanVL's row 0 is the running index)
