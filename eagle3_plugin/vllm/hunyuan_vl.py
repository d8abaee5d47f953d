"""HunyuanOCR (HunYuanVLForConditionalGeneration) in vLLM.

vLLM (>= 0.29) serves it through the Transformers backend, whose EAGLE-3 capture records the aux states inside the inner
text model, but HunYuanVLModel.forward rebuilds its output and drops them, so the runner's
``hidden_states, aux = model_output`` fails ("too many values to unpack"). The proposer also looks up
``config.image_token_index`` (HunYuanVLConfig only has ``image_token_id``) unless the target class is literally
named HunYuanVLForConditionalGeneration. Our subclass below fixes both:

  * aux id L is the residual stream entering decoder layer L, i.e. the output of layer L-1: we record it with a
    forward hook on that layer (the same tensor the backend's OutputRecorder would have captured) and return
    ``(hidden_states, [aux...])`` like every native SupportsEagle3 model;
  * when several images are encoded in one batch, the backend splits the encoder output by *patch* counts
    (``image_grid_thw.prod()``), while HunYuanVL's patch merger emits (h/2)(w/2 + 1) + 2 tokens per image; every
    image after the first then gets another image's (or repeated) features, so greedy output depends on what else
    is in the batch. We encode the images of a batch one at a time, which the backend does correctly.
The draft uses 1-D positions (row 0 of XD-RoPE is the running index).
"""
from __future__ import annotations

import torch
from vllm.model_executor.models.transformers import TransformersMultiModalForCausalLM

from ..compat import Report, missing
from ..families import FAMILIES
from .drafts import family_draft

FAMILY = FAMILIES["hunyuan_vl"]
DRAFT = family_draft(FAMILY)
BACKEND_HOOKS = ("set_aux_hidden_state_layers", "forward", "get_eagle3_default_aux_hidden_state_layers")


class HunYuanVLForConditionalGeneration(TransformersMultiModalForCausalLM):  # name matters: proposer allow-list
    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        cfg = self.config
        if not hasattr(cfg, "image_token_index") and hasattr(cfg, "image_token_id"):
            cfg.image_token_index = cfg.image_token_id
        self._eagle3_layers: tuple[int, ...] = ()
        self._eagle3_states: dict[int, object] = {}
        self._eagle3_hooks = []

    def _process_vision_input(self, modality, pixel_values, num_patches, **kwargs):
        rows = num_patches.flatten().tolist()
        select = getattr(self, "_select_item_kwargs", None)
        if not isinstance(pixel_values, torch.Tensor) or len(rows) <= 1 or select is None:
            return super()._process_vision_input(modality, pixel_values, num_patches, **kwargs)
        out = []
        for i, item in enumerate(torch.split(pixel_values, rows, dim=0)):
            out.extend(super()._process_vision_input(modality, item, num_patches.flatten()[i:i + 1],
                                                     **select(kwargs, i, len(rows))))
        return out

    def set_aux_hidden_state_layers(self, layers) -> None:
        for h in self._eagle3_hooks:
            h.remove()
        self._eagle3_layers = tuple(sorted(set(int(x) for x in layers)))
        self._eagle3_hooks = []
        for layer in self._eagle3_layers:
            module = self.model.get_submodule(self._layer_names[layer - 1])

            def record(_module, _inputs, output, _layer=layer):
                h = output[0] if isinstance(output, (tuple, list)) else output
                self._eagle3_states[_layer] = h[0] if h.dim() == 3 else h   # drop the batch dim the backend adds
            self._eagle3_hooks.append(module.register_forward_hook(record))

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs):
        self._eagle3_states.clear()
        out = super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)
        if not self._eagle3_layers or isinstance(out, tuple) or not self.pp_group.is_last_rank:
            return out
        return out, [self._eagle3_states.pop(layer) for layer in self._eagle3_layers]


def register(version: str, report: Report) -> None:
    from . import register_model
    arch = FAMILY.hf_architectures[0]
    problem = missing("vllm.model_executor.models.transformers.base", "Base")
    if not problem:
        from vllm.model_executor.models.transformers.base import Base
        absent = [m for m in BACKEND_HOOKS if not hasattr(Base, m)]
        problem = f"Transformers backend lacks {absent}" if absent else None
    if problem:
        report.add(f"target {arch}", "skipped", problem)
        return
    register_model(arch, f"{__name__}:{HunYuanVLForConditionalGeneration.__name__}")
    report.add(f"target {arch}", "registered", "Transformers backend with working aux capture")
