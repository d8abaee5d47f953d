"""Qwen2-Audio in vLLM: upstream has no EAGLE-3 support in any version.

Two gaps, both closed by a subclass registered under the upstream architecture name:
  * the model does not declare SupportsEagle3, so the runner refuses aux hidden states
    ("Model does not support EAGLE3 interface but aux_hidden_state_outputs was requested");
  * the V1 proposer reads ``config.image_token_index`` for multimodal targets outside its allow-list, and
    Qwen2AudioConfig only has ``audio_token_index`` (AttributeError at engine start).
Its inner Qwen2Model is an EagleModelMixin that already returns (hidden, aux) once layers are set, and the outer
forward passes that tuple through, so no forward change is needed. The draft uses 1-D positions.

One more gap, for checkpoints whose feature window is not Qwen2-Audio's 30 s (the shipped listener's is 5 s):
upstream's input schema fixes the mel frames at 3000, while its processing, profiling and encoder follow the
checkpoint's own window (audio_config.max_source_positions x 2 frames). Such features are checked against that window
instead; a 30 s checkpoint goes through upstream's check unchanged.
"""
from __future__ import annotations

from vllm.model_executor.models.interfaces import SupportsEagle3
from vllm.model_executor.models.qwen2_audio import Qwen2AudioForConditionalGeneration as _Upstream

from ..compat import Report
from ..families import FAMILIES
from .drafts import family_draft

FAMILY = FAMILIES["qwen2_audio"]
UPSTREAM_FRAMES = 3000          # 30 s of 10 ms mel frames: what upstream's input schema expects
DRAFT = family_draft(FAMILY)


class Qwen2AudioForConditionalGeneration(_Upstream, SupportsEagle3):  # keeps the upstream name: proposer checks names
    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if not hasattr(self.config, "image_token_index"):
            self.config.image_token_index = self.config.audio_token_index

    def _parse_and_validate_audio_input(self, **kwargs):
        frames = 2 * self.config.audio_config.max_source_positions
        features, mask = kwargs.get("input_features"), kwargs.get("feature_attention_mask")
        if frames == UPSTREAM_FRAMES or features is None:
            return super()._parse_and_validate_audio_input(**kwargs)
        from vllm.model_executor.models.qwen2_audio import Qwen2AudioFeatureInputs
        if features.shape[-1] != frames or mask is None or mask.shape[-1] != frames:
            got = f"{tuple(features.shape)}, mask {None if mask is None else tuple(mask.shape)}"
            raise ValueError(f"audio features {got} do not fit this checkpoint's window of {frames} mel frames")
        return Qwen2AudioFeatureInputs(type="audio_features", input_features=features, feature_attention_mask=mask,
                                       validate=False)

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
