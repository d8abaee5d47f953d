"""Qwen3-VL in vLLM: the target is native (SupportsEagle3 since 0.12; deepstack is added before aux capture, as
our trainer does), so only our draft name is registered."""
from __future__ import annotations

from . import Item, register_model


def register(version: str) -> list[Item]:
    register_model("Eagle3Qwen3VLForCausalLM", "eagle3_plugin.vllm.drafts:Eagle3Qwen3VLForCausalLM")
    return [Item("target Qwen3VLForConditionalGeneration", "native", "SupportsEagle3 upstream (>= 0.12)"),
            Item("draft Eagle3Qwen3VLForCausalLM", "registered")]
