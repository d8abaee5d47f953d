"""Qwen2-Audio in SGLang: no EAGLE-3 support in any version (0.4.10 ... 0.5.23).

SGLang's ``Qwen2AudioForConditionalGeneration`` wraps a ``Qwen2ForCausalLM`` (``self.language_model``) and its forward
returns that model's ``LogitsProcessorOutput`` through ``general_mm_embed_routine``, so once the inner model captures,
the aux states reach the EAGLE worker unchanged. Missing are the two methods the worker calls on the target; they are
added (not replaced) and delegate to the inner model, which applies SGLang's +1 layer-id shift.

One more difference matters for EAGLE-3: SGLang runs the audio encoder over the whole 30 s mel window without the
padding mask that transformers and vLLM apply, so every audio feature (and every hidden state after the audio)
differs from what the draft was trained on. ``get_audio_feature`` is wrapped to pass the same mask as transformers
(from the processor's ``feature_attention_mask``); without that mask on an item it falls back to SGLang's code.
"""
from __future__ import annotations

import functools

import torch

from ..compat import Report
from ..families import FAMILIES

FAMILY = FAMILIES["qwen2_audio"]
ARCH = FAMILY.hf_architectures[0]
TARGET_ITEM = f"target {ARCH}"


def set_eagle3_layers_to_capture(self, layer_ids=None):
    self.capture_aux_hidden_states = True
    self.language_model.set_eagle3_layers_to_capture(layer_ids)


def get_embed_and_head(self):
    return self.language_model.get_embed_and_head()


METHODS = {"set_eagle3_layers_to_capture": set_eagle3_layers_to_capture, "get_embed_and_head": get_embed_and_head}


def _encoder_mask(tower, frames_mask_2d: torch.Tensor, dtype: torch.dtype):
    """The encoder attention mask transformers' Qwen2AudioForConditionalGeneration builds (padded frames masked)."""
    dummy = torch.zeros((*frames_mask_2d.shape, 1), dtype=dtype, device=frames_mask_2d.device)
    try:
        from transformers.masking_utils import create_bidirectional_mask
        return create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=frames_mask_2d)
    except ImportError:  # transformers 4.x: additive float mask, as its Qwen2-Audio did then
        b, s = frames_mask_2d.shape
        mask = torch.zeros((b, 1, s, s), dtype=dtype, device=frames_mask_2d.device)
        return mask.masked_fill(~frames_mask_2d.bool().view(b, 1, 1, s), float("-inf"))


def masked_audio_feature(original):
    @functools.wraps(original)
    def get_audio_feature(self, items):
        masks = [getattr(item, "feature_attention_mask", None) for item in items]
        if not items or any(m is None for m in masks):
            return original(self, items)
        tower = self.audio_tower
        features = torch.cat([item.feature for item in items], dim=0).type(tower.dtype)
        frames = torch.cat([torch.as_tensor(m).reshape(-1, m.shape[-1]) for m in masks], dim=0)
        frames = frames.to(features.device)
        feat_lens, out_lens = tower._get_feat_extract_output_lengths(frames.sum(-1))
        max_len = (features.shape[-1] - 2) // 2 + 1
        valid = (torch.arange(max_len, device=features.device)[None, :] < feat_lens[:, None]).long()
        hidden = tower(features, attention_mask=_encoder_mask(tower, valid, features.dtype)).last_hidden_state
        embeds = self.multi_modal_projector(hidden)
        return torch.cat([e[: int(n)] for n, e in zip(out_lens.tolist(), embeds)], dim=0)

    get_audio_feature.__eagle3_plugin_wrapped__ = True
    return get_audio_feature


def patch(cls) -> list[str]:
    """Add the missing methods to ``cls`` and mask the audio encoder's padding; returns what was changed."""
    changed = []
    for name, fn in METHODS.items():
        if not hasattr(cls, name):
            setattr(cls, name, fn)
            changed.append(name)
    orig = getattr(cls, "get_audio_feature", None)
    if orig is not None and not getattr(orig, "__eagle3_plugin_wrapped__", False):
        cls.get_audio_feature = masked_audio_feature(orig)
        changed.append("get_audio_feature (padding mask)")
    return changed


def _patch_target(module, report: Report) -> None:
    cls = getattr(module, ARCH, None)
    if cls is None:
        return report.add(TARGET_ITEM, "skipped", f"{module.__name__} has no {ARCH}")
    from sglang.srt.models.qwen2 import Qwen2ForCausalLM
    absent = [m for m in ("set_eagle3_layers_to_capture", "get_embed_and_head") if not hasattr(Qwen2ForCausalLM, m)]
    if absent:
        return report.add(TARGET_ITEM, "skipped", f"its inner Qwen2ForCausalLM lacks {', '.join(absent)}")
    added = patch(cls)
    report.add(TARGET_ITEM, "registered" if added else "native",
               f"added {', '.join(added)}" if added else "SGLang already implements the EAGLE-3 methods")


ITEMS = (("sglang.srt.models.qwen2_audio", TARGET_ITEM, _patch_target),)
