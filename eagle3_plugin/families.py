"""The table of target families: the one place that says how each supported target feeds an EAGLE-3 draft.

The trainer trains by it, the checkpoint writer records it in ``config.json``, both engine adapters serve by it, the
CLI takes its choices from it and ``eagle3-train check`` validates against it. Nothing here imports an engine or torch.
A family's engine-specific code lives in one file per engine, ``eagle3_plugin/vllm/<name>.py`` and
``eagle3_plugin/sglang/<name>.py`` (the text family needs none: both engines serve it natively).

Conventions (the same in vLLM and in our trainer):
  * an aux layer id ``L`` is the residual stream *entering* target decoder layer ``L`` (== HF
    ``output_hidden_states[L]`` for models without deepstack; for Qwen3-VL it includes the deepstack add of layer
    ``L-1``, which is what both engines capture). Valid ids: ``1 <= L < num_layers``.
  * ``positions`` says what the draft's rotary embedding receives:
      ``"1d"``     plain running index (text, Qwen2-Audio);
      ``"mrope"``  the target's 3-row M-RoPE ids (Qwen3-VL); the draft config then declares ``mrope_section``;
      ``"row0"``   row 0 of the target's multi-axis ids, which for HunYuanVL's XD-RoPE is the running index.
    Only for ``"mrope"`` does the serving runner matter (``draft_positions``): vLLM's V1 runner hands the draft
    the target's M-RoPE rows (``v1/spec_decode/llm_base_proposer.py`` ``_set_positions``), its V2 runner (the GPU
    default) the running index (``v1/worker/gpu/spec_decode/target_dependent_ar/speculator.py``
    ``prepare_prefill_inputs`` copies ``input_batch.positions``; only the target reads ``mm/rope.py``'s RopeState).
    A draft is trained for one of them (``eagle3-train train --vllm-runner``) and refuses to load on the other.
  * media placeholder tokens are embedded with the (frozen) target text embedding and never trained on.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Mapping

VLLM_RUNNERS = ("v1", "v2")      # vLLM's model runners, as `VllmConfig.use_v2_model_runner` picks them


@dataclass(frozen=True)
class TargetFamily:
    name: str                                  # short id used on the command line and in config.json
    hf_architectures: tuple[str, ...]          # target `architectures[0]` values this family covers
    model_types: tuple[str, ...]               # target `model_type` values
    hf_model_class: str                        # the transformers class the trainer loads the target with
    draft_architecture: str                    # what our trainer writes into the draft's config.json
    modality: str                              # "text" | "image" | "audio"
    positions: str                             # "1d" | "mrope" | "row0" (see module doc)
    placeholder_attrs: tuple[str, ...] = ()    # target config attributes holding media placeholder token ids
    deepstack_attr: str | None = None          # vision_config attribute listing deepstack layers (Qwen3-VL)
    # media items per prompt the engines are started with (vLLM's limit_mm_per_prompt); video needs torchvision
    media_limits: Mapping[str, int] = field(default_factory=dict)
    # what vLLM's model class inserts per media item for a "string"-format chat template (get_placeholder_str;
    # "{i}" = the item's 1-based index in the request; None = nothing): render.py uses it when vLLM is absent
    chat_placeholders: Mapping[str, str | None] = field(default_factory=dict)
    # legacy / published names that engines must also accept for this family's targets
    compatible_draft_architectures: tuple[str, ...] = ("LlamaForCausalLMEagle3", "Eagle3LlamaForCausalLM")

    @property
    def has_engine_modules(self) -> bool:
        """Families other than plain text have one module per engine (see the module doc)."""
        return self.modality != "text"

    # ---- derived facts, computed from a target config (a dict from config.json) ----
    def text_config(self, cfg: Mapping[str, Any]) -> Mapping[str, Any]:
        return cfg.get("text_config") or cfg

    def num_layers(self, cfg: Mapping[str, Any]) -> int:
        return int(self.text_config(cfg)["num_hidden_layers"])

    def placeholder_token_ids(self, cfg: Mapping[str, Any]) -> tuple[int, ...]:
        ids = []
        for attr in self.placeholder_attrs:
            v = cfg.get(attr, self.text_config(cfg).get(attr))
            if v is not None:
                ids.append(int(v))
        return tuple(ids)

    def deepstack_depth(self, cfg: Mapping[str, Any]) -> int:
        if not self.deepstack_attr:
            return 0
        return len((cfg.get("vision_config") or {}).get(self.deepstack_attr) or [])

    def default_aux_layer_ids(self, cfg: Mapping[str, Any]) -> tuple[int, int, int]:
        """EAGLE-3's (low, mid, high) = (2, L//2, L-3), moved above Qwen3-VL's deepstack range so the captured
        states do not depend on where an engine adds the deepstack features (SpecForge PR #431 did the same).
        A draft config's own ids override them (checkpoint.aux_layer_ids reads them back)."""
        n = self.num_layers(cfg)
        low = max(2, self.deepstack_depth(cfg) + 1)
        ids = (low, max(low + 1, n // 2), n - 3)
        if not (1 <= ids[0] < ids[1] < ids[2] < n):
            raise ValueError(f"target has {n} text layers: too few for 3 distinct EAGLE-3 aux layers "
                             f"above the deepstack range (got {ids}); use a target with >= {low + 5} layers")
        return ids

    def aux_layer_ids(self, cfg: Mapping[str, Any], chosen=None) -> tuple[int, ...]:
        """The aux layer ids a draft for this target uses: the user's `chosen` ids, else the defaults."""
        return tuple(int(i) for i in chosen) if chosen else self.default_aux_layer_ids(cfg)

    def draft_positions(self, vllm_runner: str = "v1") -> str:
        """The positions a draft trained for `vllm_runner` receives: an M-RoPE family's draft gets the running
        index ("1d") on V2, which never hands a draft M-RoPE rows; every other family's are the same on both."""
        if vllm_runner not in VLLM_RUNNERS:
            raise ValueError(f"vllm_runner must be one of {VLLM_RUNNERS}, got {vllm_runner!r}")
        return "1d" if self.positions == "mrope" and vllm_runner == "v2" else self.positions

    def rope_for_draft(self, cfg: Mapping[str, Any], vllm_runner: str = "v1") -> dict[str, Any]:
        """Rotary settings for the draft's config.json; the trainer reads them back from there."""
        tc = self.text_config(cfg)
        rp = dict(tc.get("rope_parameters") or tc.get("rope_scaling") or {})
        theta = float(rp.get("rope_theta", tc.get("rope_theta", 10000.0)))
        out: dict[str, Any] = {"rope_theta": theta}
        if self.draft_positions(vllm_runner) == "mrope":
            section = rp.get("mrope_section")
            if not section:
                raise ValueError(f"{self.name} target config has no mrope_section in its rope parameters")
            out["rope_scaling"] = {"rope_type": "default", "mrope_section": list(section),
                                   "mrope_interleaved": bool(rp.get("mrope_interleaved", False))}
        else:
            out["rope_scaling"] = None
        return out

    def engine_media_limits(self) -> dict[str, int] | None:
        """``media_limits`` for this machine: video is switched off where torchvision (its decoder) is missing."""
        if not self.media_limits:
            return None
        limits = dict(self.media_limits)
        if "video" in limits and importlib.util.find_spec("torchvision") is None:
            limits["video"] = 0
        return limits


FAMILIES: dict[str, TargetFamily] = {f.name: f for f in (
    TargetFamily(
        name="text", hf_architectures=("Qwen3ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM"),
        model_types=("qwen3", "qwen2", "llama"), hf_model_class="AutoModelForCausalLM",
        draft_architecture="LlamaForCausalLMEagle3", modality="text", positions="1d",
        compatible_draft_architectures=("Eagle3LlamaForCausalLM",)),
    TargetFamily(
        name="qwen3_vl", hf_architectures=("Qwen3VLForConditionalGeneration",), model_types=("qwen3_vl",),
        hf_model_class="Qwen3VLForConditionalGeneration", draft_architecture="Eagle3Qwen3VLForCausalLM",
        modality="image", positions="mrope", placeholder_attrs=("image_token_id", "video_token_id"),
        deepstack_attr="deepstack_visual_indexes", media_limits={"image": 1, "video": 1},
        chat_placeholders={"image": "<|vision_start|><|image_pad|><|vision_end|>",        # vLLM qwen3_vl.py:1978
                           "video": "<|vision_start|><|video_pad|><|vision_end|>"},
        compatible_draft_architectures=("LlamaForCausalLMEagle3", "Eagle3LlamaForCausalLM",
                                        "Eagle3Qwen3vlForCausalLM")),
    TargetFamily(
        name="hunyuan_vl", hf_architectures=("HunYuanVLForConditionalGeneration",), model_types=("hunyuan_vl",),
        hf_model_class="HunYuanVLForConditionalGeneration", draft_architecture="Eagle3HunYuanVLForCausalLM",
        modality="image", positions="row0", placeholder_attrs=("image_token_id",), media_limits={"image": 1},
        chat_placeholders={"image": None}),   # vLLM >= 0.29 serves it on the Transformers backend: no placeholder
    TargetFamily(
        name="qwen2_audio", hf_architectures=("Qwen2AudioForConditionalGeneration",),
        model_types=("qwen2_audio",), hf_model_class="Qwen2AudioForConditionalGeneration",
        draft_architecture="Eagle3Qwen2AudioForCausalLM", modality="audio", positions="1d",
        placeholder_attrs=("audio_token_index",), media_limits={"audio": 1},
        chat_placeholders={"audio": "Audio {i}: <|audio_bos|><|AUDIO|><|audio_eos|>"}),   # vLLM qwen2_audio.py:327
)}

DRAFT_ARCHITECTURES: dict[str, TargetFamily] = {
    f.draft_architecture: f for f in FAMILIES.values() if f.has_engine_modules}


def family_for_target(cfg: Mapping[str, Any]) -> TargetFamily:
    """The family of a target given its config.json dict; a clear error if we do not support it."""
    archs = tuple(cfg.get("architectures") or ())
    mt = cfg.get("model_type")
    for fam in FAMILIES.values():
        if (archs and archs[0] in fam.hf_architectures) or mt in fam.model_types:
            return fam
    supported = ", ".join(a for f in FAMILIES.values() for a in f.hf_architectures)
    raise ValueError(f"unsupported target (architectures={list(archs)}, model_type={mt!r}); "
                     f"supported: {supported}")


def family_for_draft(draft_cfg: Mapping[str, Any]) -> TargetFamily | None:
    """The family recorded in a draft's config.json (None for a generic Llama EAGLE-3 draft)."""
    name = (draft_cfg.get("eagle3_plugin") or {}).get("family")
    if name in FAMILIES:
        return FAMILIES[name]
    arch = (draft_cfg.get("architectures") or [None])[0]
    return DRAFT_ARCHITECTURES.get(arch)
