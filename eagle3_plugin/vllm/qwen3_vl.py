"""Qwen3-VL in vLLM: the target is native (SupportsEagle3 since 0.12; deepstack is added before aux capture, as
our trainer does), so only our draft is registered.

The two model runners hand the draft different positions for text after an image (families.py, with file:line):
V1 the target's M-RoPE rows (the draft config declares ``mrope_section``), V2 (the GPU default) the running index.
The trainer trains for one of them (``--vllm-runner``, recorded in config.json); the draft refuses to load under
the other, since every image prompt would silently lose acceptance."""
from __future__ import annotations

from ..checkpoint import trained_positions, trained_runner
from ..compat import Report
from ..families import FAMILIES
from .drafts import FamilyDraft, family_draft

FAMILY = FAMILIES["qwen3_vl"]


def serving_runner(vllm_config) -> str:
    """The model runner this engine runs: vLLM's own choice (``VllmConfig.use_v2_model_runner``, 0.25+), else
    the ``VLLM_USE_V2_MODEL_RUNNER`` switch of versions that predate the property."""
    uses_v2 = getattr(type(vllm_config), "use_v2_model_runner", None)
    if uses_v2 is not None:
        return "v2" if vllm_config.use_v2_model_runner else "v1"
    import vllm.envs as envs
    return "v2" if getattr(envs, "VLLM_USE_V2_MODEL_RUNNER", False) else "v1"


def runner_mismatch(draft_cfg: dict, runner: str) -> str | None:
    """Why a draft cannot be served on `runner` (None if it can): its positions are another runner's."""
    trained = trained_positions(draft_cfg)
    if trained == FAMILY.draft_positions(runner):
        return None
    other = trained_runner(draft_cfg)
    switch = "VLLM_USE_V2_MODEL_RUNNER=1" if other == "v2" else "VLLM_USE_V2_MODEL_RUNNER=0"
    return (f"this Qwen3-VL EAGLE-3 draft was trained on the positions vLLM's {other.upper()} model runner hands a "
            f"draft ({trained!r}), but this engine runs the {runner.upper()} runner, which hands it "
            f"{FAMILY.draft_positions(runner)!r}: image prompts would lose acceptance. Serve it with "
            f"{switch}, or retrain with `eagle3-train train --vllm-runner {runner}`")


class _Qwen3VLDraft(FamilyDraft):
    def __init__(self, *, vllm_config, prefix: str = ""):
        cfg = vllm_config.speculative_config.draft_model_config.hf_config
        problem = runner_mismatch(cfg.to_dict(), serving_runner(vllm_config))
        if problem:
            raise ValueError(f"eagle3-plugin: {problem}")
        super().__init__(vllm_config=vllm_config, prefix=prefix)


DRAFT = family_draft(FAMILY, _Qwen3VLDraft)


def register(version: str, report: Report) -> None:
    report.add(f"target {FAMILY.hf_architectures[0]}", "native", "SupportsEagle3 upstream (>= 0.12)")
