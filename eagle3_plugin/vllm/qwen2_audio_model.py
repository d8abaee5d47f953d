"""The Qwen2-Audio target class with EAGLE-3 support (see qwen2_audio.py for why)."""
from __future__ import annotations

from vllm.model_executor.models.interfaces import SupportsEagle3
from vllm.model_executor.models.qwen2_audio import Qwen2AudioForConditionalGeneration as _Upstream


class Qwen2AudioForConditionalGeneration(_Upstream, SupportsEagle3):  # keeps the upstream name: proposer checks names
    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if not hasattr(self.config, "image_token_index"):
            self.config.image_token_index = self.config.audio_token_index

    def set_aux_hidden_state_layers(self, layers) -> None:
        inner = self.language_model.model
        if hasattr(inner, "_set_aux_hidden_state_layers"):      # vLLM >= 0.18 (EagleModelMixin)
            inner._set_aux_hidden_state_layers(tuple(layers))
        else:                                                   # vLLM <= 0.17
            inner.aux_hidden_state_layers = tuple(layers)

    def get_eagle3_default_aux_hidden_state_layers(self) -> tuple[int, ...]:
        n = len(self.language_model.model.layers)
        return (2, n // 2, n - 3)

    get_eagle3_aux_hidden_state_layers = get_eagle3_default_aux_hidden_state_layers  # name used by <= 0.17
