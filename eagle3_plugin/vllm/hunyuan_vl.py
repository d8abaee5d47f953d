"""HunyuanOCR (HunYuanVLForConditionalGeneration) in vLLM.

0.16 - 0.28: native ``hunyuan_vision.py`` with SupportsEagle3 and XD-RoPE in the proposer: nothing to do.
>= 0.29: served by the Transformers backend, whose EAGLE-3 capture records the aux states inside the inner text
model, but HunYuanVLModel.forward rebuilds its output and drops them, so the runner's
``hidden_states, aux = model_output`` fails ("too many values to unpack"). The proposer also looks up
``config.image_token_index`` (HunYuanVLConfig only has ``image_token_id``) unless the target class is literally
named HunYuanVLForConditionalGeneration. Our subclass fixes both; see hunyuan_vl_model.py.
"""
from __future__ import annotations

from packaging.version import Version

from . import Item, _has, register_model

ARCH = "HunYuanVLForConditionalGeneration"


def register(version: str) -> list[Item]:
    items = []
    if Version(Version(version).base_version) < Version("0.29"):
        items.append(Item(f"target {ARCH}", "native", "native hunyuan_vision with SupportsEagle3 (0.16 - 0.28)"))
    else:
        problem = _has("vllm.model_executor.models.transformers", "TransformersMultiModalForCausalLM") or \
            _has("vllm.model_executor.models.transformers.base", "Base")
        if not problem:
            from vllm.model_executor.models.transformers.base import Base
            missing = [m for m in ("set_aux_hidden_state_layers", "forward", "get_eagle3_default_aux_hidden_state_layers")
                       if not hasattr(Base, m)]
            problem = f"Transformers backend lacks {missing}" if missing else None
        if problem:
            items.append(Item(f"target {ARCH}", "skipped", problem))
        else:
            register_model(ARCH, "eagle3_plugin.vllm.hunyuan_vl_model:HunYuanVLForConditionalGeneration")
            items.append(Item(f"target {ARCH}", "registered", "Transformers backend with working aux capture"))
    register_model("Eagle3HunYuanVLForCausalLM", "eagle3_plugin.vllm.drafts:Eagle3HunYuanVLForCausalLM")
    items.append(Item("draft Eagle3HunYuanVLForCausalLM", "registered"))
    return items
