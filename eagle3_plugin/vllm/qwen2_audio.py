"""Qwen2-Audio in vLLM: upstream has no EAGLE-3 support in any version.

Two gaps, both closed by a subclass registered under the upstream architecture name:
  * the model does not declare SupportsEagle3, so the runner refuses aux hidden states
    ("Model does not support EAGLE3 interface but aux_hidden_state_outputs was requested");
  * the V1 proposer reads ``config.image_token_index`` for multimodal targets outside its allow-list, and
    Qwen2AudioConfig only has ``audio_token_index`` (AttributeError at engine start).
Its inner Qwen2Model is an EagleModelMixin that already returns (hidden, aux) once layers are set, and the outer
forward passes that tuple through, so no forward change is needed.
"""
from __future__ import annotations

from . import Item, _has, register_model

ARCH = "Qwen2AudioForConditionalGeneration"


def register(version: str) -> list[Item]:
    items = []
    problem = _has("vllm.model_executor.models.qwen2_audio", ARCH)
    if problem:
        items.append(Item(f"target {ARCH}", "skipped", problem))
    else:
        register_model(ARCH, "eagle3_plugin.vllm.qwen2_audio_model:Qwen2AudioForConditionalGeneration")
        items.append(Item(f"target {ARCH}", "registered", "adds SupportsEagle3"))
    register_model("Eagle3Qwen2AudioForCausalLM", "eagle3_plugin.vllm.drafts:Eagle3Qwen2AudioForCausalLM")
    items.append(Item("draft Eagle3Qwen2AudioForCausalLM", "registered"))
    return items
