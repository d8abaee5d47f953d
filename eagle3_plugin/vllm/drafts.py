"""The base of our per-family EAGLE-3 draft classes for vLLM.

They are vLLM's Eagle3LlamaForCausalLM (the V1 proposer only accepts its subclasses) under the names our trainer
writes (``families.py``: ``draft_architecture``). The math is unchanged; what a family needs is carried by the draft
config the trainer wrote: positions (a ``rope_scaling.mrope_section`` makes vLLM's V1 runner hand the draft the
target's M-RoPE ids; otherwise 1-D ids), and media placeholders embedded as text tokens (the base class ignores
multimodal embeddings), as in training. Family quirks live in the family's module (``vllm/<family>.py``).

Debugging train/serve mismatches: with ``EAGLE3_PLUGIN_DUMP_DIR=/some/dir`` each draft forward saves what vLLM
hands the draft (the concatenated target aux states, input ids, positions) as safetensors files, to compare with
what the trainer computed (``eagle3_plugin.trainer.target``).
"""
from __future__ import annotations

import itertools
import os

import torch
from vllm.model_executor.models.llama_eagle3 import Eagle3LlamaForCausalLM

from ..families import TargetFamily

_counter = itertools.count()


def _dump(kind: str, **tensors: torch.Tensor) -> None:
    out = os.environ.get("EAGLE3_PLUGIN_DUMP_DIR")
    if not out:
        return
    from safetensors.torch import save_file
    os.makedirs(out, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
              os.path.join(out, f"{kind}-{os.getpid()}-{next(_counter):06d}.safetensors"))


class FamilyDraft(Eagle3LlamaForCausalLM):
    def combine_hidden_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        _dump("aux", aux=hidden_states)
        return super().combine_hidden_states(hidden_states)

    def forward(self, input_ids, positions, hidden_states, inputs_embeds=None):
        _dump("fwd", input_ids=input_ids, positions=positions)
        return super().forward(input_ids, positions, hidden_states, inputs_embeds)


def family_draft(family: TargetFamily, base: type = FamilyDraft) -> type:
    """The draft class of a family, named as the family table says (vLLM resolves it by that name)."""
    return type(family.draft_architecture, (base,), {"__module__": f"{__package__}.{family.name}"})
