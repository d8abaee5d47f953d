"""Our per-family EAGLE-3 draft classes for vLLM.

They are vLLM's Eagle3LlamaForCausalLM (the V1 proposer only accepts its subclasses) under the names our trainer
writes. The math is unchanged; what a family needs is carried by the draft config the trainer wrote:
  * Qwen3-VL: ``rope_scaling.mrope_section`` makes vLLM's V1 runner hand the draft the target's 3-row M-RoPE ids,
    which is what the draft was trained on. vLLM's V2 runner (GPU default from ~0.29) feeds 1-D ids instead; we warn
    once, since text after an image then gets other positions than in training (set VLLM_USE_V2_MODEL_RUNNER=0).
  * HunyuanOCR, Qwen2-Audio: 1-D positions (row 0 of HunYuanVL's XD-RoPE ids is the running index).
  * media placeholders are embedded as text tokens (the base class ignores multimodal embeddings), as in training.

Debugging train/serve mismatches: with ``EAGLE3_PLUGIN_DUMP_DIR=/some/dir`` each draft forward saves what vLLM
hands the draft (the concatenated target aux states, input ids, positions) as safetensors files, to compare with
what the trainer computed (``eagle3_plugin.trainer.target``).
"""
from __future__ import annotations

import itertools
import os

import torch
from vllm.model_executor.models.llama_eagle3 import Eagle3LlamaForCausalLM

_counter = itertools.count()


def _dump(kind: str, **tensors: torch.Tensor) -> None:
    out = os.environ.get("EAGLE3_PLUGIN_DUMP_DIR")
    if not out:
        return
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
              os.path.join(out, f"{kind}-{os.getpid()}-{next(_counter):06d}.safetensors"))


class _FamilyDraft(Eagle3LlamaForCausalLM):
    def combine_hidden_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        _dump("aux", aux=hidden_states)
        return super().combine_hidden_states(hidden_states)

    def forward(self, input_ids, positions, hidden_states, inputs_embeds=None):
        _dump("fwd", input_ids=input_ids, positions=positions)
        return super().forward(input_ids, positions, hidden_states, inputs_embeds)


class Eagle3Qwen3VLForCausalLM(_FamilyDraft):
    _warned_1d = False

    def forward(self, input_ids, positions, hidden_states, inputs_embeds=None):
        if positions.ndim == 1 and not Eagle3Qwen3VLForCausalLM._warned_1d:
            Eagle3Qwen3VLForCausalLM._warned_1d = True
            from . import logger
            logger().warning("eagle3-plugin: this vLLM runner feeds the Qwen3-VL draft 1-D positions, but it was "
                             "trained on M-RoPE ids; acceptance drops on image prompts. Use the V1 runner "
                             "(VLLM_USE_V2_MODEL_RUNNER=0).")
        return super().forward(input_ids, positions, hidden_states, inputs_embeds)


class Eagle3HunYuanVLForCausalLM(_FamilyDraft):
    pass


class Eagle3Qwen2AudioForCausalLM(_FamilyDraft):
    pass
