"""Issue 6, part 3: the SGLang targets the drafts are served with, on the tiny real checkpoints and real fixtures.

HunyuanOCR: our native SGLang port, fed through SGLang's own request path (our BaseMultimodalProcessor subclass on
the real HF processor, ``MultimodalInputs.from_processor_output``, ``pad_input_ids``, SGLang's extend M-RoPE
bookkeeping, ``general_mm_embed_routine`` with the embedding cache) matches transformers'
HunYuanVLForConditionalGeneration logits, and its EAGLE-3 capture matches transformers' hidden states.
Qwen2-Audio: SGLang's model with our capture methods, same comparison.
Qwen3-VL: SGLang's native model; its capture and the draft's M-RoPE rows against the trainer's features.
Both sides run fp32, so the tolerance is tight; each has a control that must fail.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.sglang

TOL = 1e-4          # observed <= 1.2e-6
CONTROL_MIN = 1e-2  # observed 0.13 - 0.18


@pytest.fixture(scope="module")
def targets(sgl_run):
    return sgl_run(["hunyuan_vl_target", "qwen2_audio_target", "qwen3_vl_target"])


def test_hunyuan_vl_request_path_matches_hf(targets):
    r = targets["hunyuan_vl_target"]
    assert r["unwritten_params"] == []                      # every parameter came from the checkpoint
    assert r["num_image_tokens"] > 20 and r["input_ids_equal_hf"]
    assert r["xd_positions_equal_hf"]                       # 4-axis XD-RoPE ids == HunYuanVLModel.get_rope_index
    assert r["rope_delta"] == [0, 0]
    assert r["mm_input_embeds_set"]                         # what SGLang's EAGLE worker hands to a stock draft


def test_hunyuan_vl_logits_match_hf(targets):
    r = targets["hunyuan_vl_target"]
    assert r["logits_absmax"] > 0.5
    assert r["logits_maxdiff"] < TOL, r
    assert r["logits_maxdiff_1d_rope_control"] > CONTROL_MIN, r   # the XD-RoPE rows matter on this prompt


def test_hunyuan_vl_capture_matches_hf_hidden_states(targets):
    r = targets["hunyuan_vl_target"]
    assert max(r["aux_maxdiff"]) < TOL, r
    assert r["aux_maxdiff_wrong_layer_control"] > CONTROL_MIN, r
    assert r["embed_and_head_shapes"][0] == r["embed_and_head_shapes"][1]   # tied head, returned by get_embed_and_head


@pytest.mark.parametrize("target", ["hunyuan_vl_target", "qwen2_audio_target"])
def test_sglang_hands_the_draft_what_the_trainer_trains_on(targets, target):
    """SGLang's concatenated aux states == eagle3_plugin.trainer.target features for the same request (the draft
    config's SGLang ids are the trainer's ids minus one), and the draft's 1-D positions are the running index."""
    r = targets[target]
    assert r["trainer_aux_maxdiff"] < TOL, r
    assert r["trainer_positions_are_running_index"]


def test_qwen2_audio_capture_matches_hf(targets):
    r = targets["qwen2_audio_target"]
    assert r["unwritten_params"] == []
    assert r["num_audio_tokens"] > 20 and r["input_ids_equal_hf"]
    assert r["layers_to_capture"] == [2, 4, 5]              # SGLang's +1 shift of eagle_config ids [1, 3, 4]
    assert r["logits_maxdiff"] < TOL, r                     # needs the encoder padding mask we add
    assert max(r["aux_maxdiff"]) < TOL, r
    assert r["aux_maxdiff_wrong_layer_control"] > CONTROL_MIN, r
    assert r["mm_input_embeds_set"]


def test_qwen3_vl_native_capture_matches_trainer(targets):
    r = targets["qwen3_vl_target"]
    assert r["unwritten_params"] == [] and r["input_ids_equal_hf"]
    assert max(r["trainer_aux_maxdiff"].values()) < TOL, r     # ids 1-2 are inside the deepstack range
    assert r["logits_maxdiff"] < TOL, r
    assert r["mrope_rows_distinct"] and r["draft_mrope_rows_equal_trainer"]
    assert r["draft_running_positions_equal_trainer_v2"]      # a `--vllm-runner v2` draft is right on SGLang too
