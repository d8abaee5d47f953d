"""Our per-family EAGLE-3 draft classes for SGLang.

They are SGLang's ``LlamaForCausalLMEagle3`` (so the EAGLE worker, the draft-parallel spec and CUDA graphs treat them
like the stock draft) under the names our trainer writes into ``config.json``. What differs from the stock class:

  * media placeholders are embedded as TEXT tokens. The stock draft takes ``forward_batch.mm_input_embeds`` (the
    target's vision/audio features) at placeholder positions; our trainer and vLLM embed the placeholder token id with
    the target's text embedding, so the same checkpoint must see the same inputs here. SGLang replaces placeholder ids
    by 62-bit hash sentinels (radix-cache keys) and the target clamps them in place, so the real placeholder id is
    rebuilt from the request's multimodal item offsets (``restore_placeholder_ids``).
  * ``norm_before_residual`` (a draft config flag vLLM and our trainer honour; SGLang's layer ignores it) is honoured.
  * positions come from the draft config as everywhere else: a ``rope_scaling.mrope_section`` makes SGLang feed the
    target's 3-row M-RoPE ids, otherwise the draft gets 1-D positions (families.py: ``positions``).
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional, Sequence

import torch
from sglang.srt.models.llama_eagle3 import LlamaForCausalLMEagle3

from ..fallbacks import SGLANG_DRAFT_INPUTS, record

log = logging.getLogger("sglang.eagle3_plugin")

_MODALITY_TOKEN_ATTR = {"IMAGE": "im_token_id", "VIDEO": "video_token_id", "AUDIO": "audio_token_id"}


def _item_token_id(mm_input, item, fallback: Sequence[int]) -> Optional[int]:
    name = getattr(getattr(item, "modality", None), "name", str(getattr(item, "modality", "")))
    tok = getattr(mm_input, _MODALITY_TOKEN_ATTR.get(name, ""), None)
    if tok is None and fallback:
        tok = fallback[0]
    return None if tok is None else int(tok)


def restore_placeholder_ids(input_ids: torch.Tensor, mm_inputs, prefix_lens: Iterable[int],
                            extend_lens: Iterable[int], shift: int, vocab_size: int,
                            fallback_ids: Sequence[int] = ()) -> torch.Tensor:
    """A copy of ``input_ids`` (one extend chunk per request, concatenated) where every media placeholder position
    holds its placeholder token id again, and nothing is outside ``[0, vocab_size)``.

    Index ``j`` of request ``r``'s chunk is absolute position ``prefix_lens[r] + j + shift`` of that request
    (``shift`` = 1 for the draft's inputs, which are the target's ids moved left by one)."""
    ids = input_ids.clone()
    if mm_inputs:
        pt = 0
        for mm, prefix, n in zip(mm_inputs, prefix_lens, extend_lens):
            prefix, n = int(prefix), int(n)
            if mm is not None:
                for item in getattr(mm, "mm_items", None) or ():
                    tok = _item_token_id(mm, item, fallback_ids)
                    if tok is None:
                        continue
                    for start, end in getattr(item, "offsets", None) or ():
                        j0 = max(int(start) - prefix - shift, 0)
                        j1 = min(int(end) - prefix - shift, n - 1)
                        if j0 <= j1:
                            ids[pt + j0:pt + j1 + 1] = tok
            pt += n
    return ids.clamp_(0, vocab_size - 1)


def _is_mm_extend(forward_batch) -> bool:
    mode = getattr(forward_batch, "forward_mode", None)
    if mode is None or not mode.is_extend():
        return False
    if getattr(mode, "is_draft_extend_v2", None) and mode.is_draft_extend_v2():
        return False
    return any(m is not None for m in (getattr(forward_batch, "mm_inputs", None) or ()))


class _NormBeforeResidual:
    """Mixin for the draft's input layer: residual = hidden_norm(h) instead of h (vLLM's norm_before_residual)."""

    def forward(self, positions, embeds, hidden_states, forward_batch, residual):
        if not self.is_input_layer:
            return super().forward(positions, embeds, hidden_states, forward_batch, residual)
        hidden_states = self.hidden_norm(hidden_states)
        residual = hidden_states
        hidden_states = torch.cat([self.input_layernorm(embeds), hidden_states], dim=-1)
        hidden_states = self.self_attn(positions=positions, hidden_states=hidden_states, forward_batch=forward_batch)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


class _FamilyDraft(LlamaForCausalLMEagle3):
    """LlamaForCausalLMEagle3 whose media placeholders are embedded as text tokens (see module doc)."""

    def __init__(self, config, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        meta = getattr(config, "eagle3_plugin", None) or {}
        self._placeholder_ids = tuple(int(i) for i in (meta.get("placeholder_token_ids") or ()))
        if getattr(config, "norm_before_residual", False):
            layer = self.model.layers[0]
            layer.__class__ = type(f"NormBeforeResidual{type(layer).__name__}", (_NormBeforeResidual, type(layer)), {})

    def text_embeds(self, input_ids: torch.Tensor, forward_batch) -> torch.Tensor:
        if _is_mm_extend(forward_batch):
            input_ids = restore_placeholder_ids(
                input_ids, forward_batch.mm_inputs, forward_batch.extend_prefix_lens_cpu,
                forward_batch.extend_seq_lens_cpu, 1, int(self.config.vocab_size), self._placeholder_ids)
        return self.model.embed_tokens(input_ids)

    @torch.no_grad()
    def forward(self, input_ids, positions, forward_batch, input_embeds=None, *args, **kwargs):
        # Also when SGLang passes input_embeds: its prefill CUDA-graph path hands the draft the target's merged
        # multimodal embeddings there. PP ranks > 0 pass no ids and keep theirs.
        if input_ids is not None:
            input_embeds = self.text_embeds(input_ids, forward_batch)
        return super().forward(input_ids, positions, forward_batch, input_embeds, *args, **kwargs)


_DRAFTS: dict[str, type] = {}


def family_draft(family) -> type:
    """The draft class of a family, named as the family table says (SGLang's registry maps that name to it).
    One class per name, also reachable as a module attribute (so its qualified name resolves)."""
    name = family.draft_architecture
    if name not in _DRAFTS:
        cls = type(name, (_FamilyDraft,), {"__module__": __name__, "__qualname__": name})
        _DRAFTS[name] = globals()[name] = cls
    return _DRAFTS[name]


# ------------------------------------------------------------------------------------------ EAGLE worker hook
def wrap_draft_extend_for_prefill(original):
    """Wrap ``EagleDraftWorker._draft_extend_for_prefill``: when the draft is one of ours, restore the placeholder ids
    in the target batch's ids and drop the target's multimodal embeddings before the worker builds the draft batch.
    This makes every draft forward path embed placeholders as text, including SGLang's breakable prefill CUDA graph,
    which computes the draft's input embeddings itself (from ``mm_input_embeds``) instead of calling our forward.
    Never raises: on any surprise it calls the original unchanged, and that fallback is logged (once per cause) and
    counted (``eagle3_plugin.fallbacks``, shown by ``eagle3-train doctor``), because it silently lowers acceptance."""
    import functools
    import inspect

    signature = inspect.signature(original)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        model = None
        try:
            bound = signature.bind(*args, **kwargs)
            worker, batch = bound.arguments.get("self"), bound.arguments.get("batch")
            model = getattr(getattr(worker, "draft_runner", None), "model", None)
            if isinstance(model, _FamilyDraft):
                mm_inputs = batch.multimodal_inputs or ()     # (a renamed field raises: a counted fallback)
                mode = batch.forward_mode
                if any(m is not None for m in mm_inputs) and not (mode is not None and mode.is_idle()):
                    batch.input_ids = restore_placeholder_ids(
                        batch.input_ids, mm_inputs, batch.prefix_lens, batch.extend_lens, 0,
                        int(model.config.vocab_size), model._placeholder_ids)
                    bound.arguments["mm_input_embeds"] = None
                    args, kwargs = bound.args, bound.kwargs
        except Exception as e:  # noqa: BLE001 - never break the EAGLE worker
            name = type(model).__name__ if model is not None else "our draft"
            record(SGLANG_DRAFT_INPUTS, e, f"preparing the text placeholder ids for the {name} draft prefill "
                                           f"(EagleDraftWorker._draft_extend_for_prefill)", log)
        return original(*args, **kwargs)

    wrapper.__eagle3_plugin_wrapped__ = True
    return wrapper
