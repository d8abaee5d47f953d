"""Qwen3-VL in vLLM: the target is native (SupportsEagle3 since 0.12; deepstack is added before aux capture, as
our trainer does), so only our draft is registered. The draft is trained on the target's M-RoPE ids, which vLLM's V1
runner hands it because the draft config declares ``mrope_section``; vLLM's V2 runner (GPU default from ~0.29)
feeds 1-D ids instead, so text after an image gets other positions than in training (warned once)."""
from __future__ import annotations

from ..compat import Report
from ..families import FAMILIES
from .drafts import FamilyDraft, family_draft

FAMILY = FAMILIES["qwen3_vl"]


class _Qwen3VLDraft(FamilyDraft):
    _warned_1d = False

    def forward(self, input_ids, positions, hidden_states, inputs_embeds=None):
        if positions.ndim == 1 and not _Qwen3VLDraft._warned_1d:
            _Qwen3VLDraft._warned_1d = True
            from . import logger
            logger().warning("eagle3-plugin: this vLLM runner feeds the Qwen3-VL draft 1-D positions, but it was "
                             "trained on M-RoPE ids; acceptance drops on image prompts. Use the V1 runner "
                             "(VLLM_USE_V2_MODEL_RUNNER=0).")
        return super().forward(input_ids, positions, hidden_states, inputs_embeds)


DRAFT = family_draft(FAMILY, _Qwen3VLDraft)


def register(version: str, report: Report) -> None:
    report.add(f"target {FAMILY.hf_architectures[0]}", "native", "SupportsEagle3 upstream (>= 0.12)")
