"""HunYuanVL on vLLM's Transformers backend with EAGLE-3 aux states that reach the runner (vLLM >= 0.29).

Aux id L is the residual stream entering decoder layer L, i.e. the output of layer L-1: we record it with a forward
hook on that layer (the same tensor the backend's OutputRecorder would have captured) and return
``(hidden_states, [aux...])`` like every native SupportsEagle3 model.
"""
from __future__ import annotations

from vllm.model_executor.models.transformers import TransformersMultiModalForCausalLM


class HunYuanVLForConditionalGeneration(TransformersMultiModalForCausalLM):  # name matters: proposer allow-list
    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        cfg = self.config
        if not hasattr(cfg, "image_token_index") and hasattr(cfg, "image_token_id"):
            cfg.image_token_index = cfg.image_token_id
        self._eagle3_layers: tuple[int, ...] = ()
        self._eagle3_states: dict[int, object] = {}
        self._eagle3_hooks = []

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
