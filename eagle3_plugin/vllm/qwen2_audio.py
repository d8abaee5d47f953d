"""Qwen2-Audio in vLLM: upstream has no EAGLE-3 support in any version.

Two gaps, both closed by a subclass registered under the upstream architecture name:
  * the model does not declare SupportsEagle3, so the runner refuses aux hidden states
    ("Model does not support EAGLE3 interface but aux_hidden_state_outputs was requested");
  * the V1 proposer reads ``config.image_token_index`` for multimodal targets outside its allow-list, and
    Qwen2AudioConfig only has ``audio_token_index`` (AttributeError at engine start).
Its inner Qwen2Model is an EagleModelMixin that already returns (hidden, aux) once layers are set, and the outer
forward passes that tuple through, so no forward change is needed. The draft uses 1-D positions.
"""
from __future__ import annotations

from vllm.model_executor.models.interfaces import SupportsEagle3
from vllm.model_executor.models.qwen2_audio import Qwen2AudioForConditionalGeneration as _Upstream

from ..compat import Report
from ..families import FAMILIES
from .drafts import family_draft

FAMILY = FAMILIES["qwen2_audio"]
DRAFT = family_draft(FAMILY)


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


def register(version: str, report: Report) -> None:
    from . import register_model
    arch = FAMILY.hf_architectures[0]
    register_model(arch, f"{__name__}:{Qwen2AudioForConditionalGeneration.__name__}")
    report.add(f"target {arch}", "registered", "adds SupportsEagle3")
