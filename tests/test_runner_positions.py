"""Qwen3-VL drafts for vLLM's two model runners (families.draft_positions): what each runner hands the draft, checked
against the installed vLLM's source; the trainer's positions for `--vllm-runner v1|v2` on a real image prompt; the
config a draft records; and our vLLM draft class refusing a runner it was not trained for."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from eagle3_plugin import checkpoint as ck
from eagle3_plugin import fixtures
from eagle3_plugin.devtools.tiny import cached_tiny_target
from eagle3_plugin.families import FAMILIES
from eagle3_plugin.trainer.config import TrainConfig
from eagle3_plugin.trainer.data import LoadReport, Tokenizer, read_jsonl
from eagle3_plugin.trainer.source import FeatureSource
from eagle3_plugin.trainer.target import Target, served_positions

QWEN3_VL = FAMILIES["qwen3_vl"]


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    import os
    return cached_tiny_target("qwen3_vl", cache_dir=os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("c"))


def _image_sample(target_dir):
    tok = Tokenizer(target_dir, QWEN3_VL)
    return next(s for c in read_jsonl(fixtures.CONVERSATIONS) if c.media and c.media[0][0] == "image"
                for s in tok.encode(c))


# ------------------------------------------------------------------------------------------ the engines' side
def _vllm_source(rel: str) -> str:
    import vllm
    return (Path(vllm.__file__).parent / rel).read_text()


def test_what_each_vllm_runner_hands_the_draft_is_what_families_says():
    """The installed vLLM's own code: V1 gives the draft M-RoPE rows only if the draft config declares them; V2's
    draft inputs are the batch's 1-D positions (num_computed_tokens + offset), never the target's RopeState."""
    v1 = _vllm_source("v1/spec_decode/llm_base_proposer.py")
    assert re.search(r"self\.uses_mrope\s*=\s*self\.draft_model_config\.uses_mrope", v1)
    v2 = _vllm_source("v1/worker/gpu/spec_decode/target_dependent_ar/speculator.py")
    prepare = v2[v2.index("def prepare_prefill_inputs("):]
    prepare = prepare[:prepare.index("\n\n\n")]
    assert "input_batch.positions," in prepare and "input_buffers.positions," in prepare
    assert "positions=input_buffers.positions[:num_tokens]" in v2            # what the draft model is called with
    import vllm
    spec_dir = Path(vllm.__file__).parent / "v1/worker/gpu/spec_decode"
    for f in spec_dir.rglob("*.py"):                                          # no M-RoPE path for any V2 draft
        assert not re.search(r"mrope|rope_state", f.read_text()), f
    states = _vllm_source("v1/worker/gpu/model_states/default.py")
    assert 'model_inputs["positions"] = self.rope_state.get_positions(' in states   # only the target's
    runner = _vllm_source("v1/worker/gpu/model_runner.py")
    assert re.search(r"prepare_pos_seq_lens\(\s*idx_mapping,\s*query_start_loc,\s*"
                     r"self\.req_states\.num_computed_tokens\.gpu,\s*self\.input_buffers\.positions", runner)


def test_the_running_vllm_picks_its_runner_as_the_draft_class_reads_it(monkeypatch):
    from vllm.config import VllmConfig
    from eagle3_plugin.vllm.qwen3_vl import serving_runner
    cfg = VllmConfig()
    assert serving_runner(cfg) == "v1"                           # CPU: no Triton, so vLLM's V1 runner
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")           # the switch vLLM reads first (config/vllm.py)
    assert cfg.use_v2_model_runner and serving_runner(cfg) == "v2"


@pytest.mark.parametrize("trained,served", [("v1", "v1"), ("v1", "v2"), ("v2", "v1"), ("v2", "v2")])
def test_a_draft_is_refused_on_the_runner_it_was_not_trained_for(trained, served):
    from eagle3_plugin.vllm.qwen3_vl import runner_mismatch
    tcfg = {"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
            "text_config": {"num_hidden_layers": 8, "hidden_size": 64, "intermediate_size": 128,
                            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32, "vocab_size": 512,
                            "rope_parameters": {"rope_theta": 5e6, "mrope_section": [6, 5, 5],
                                                "mrope_interleaved": True}}}
    problem = runner_mismatch(ck.build_draft_config(tcfg, vllm_runner=trained), served)
    if trained == served:
        assert problem is None
    else:
        assert f"trained on the positions vLLM's {trained.upper()} model runner" in problem
        assert f"--vllm-runner {served}" in problem and "VLLM_USE_V2_MODEL_RUNNER=" in problem
    published = {"architectures": ["Eagle3LlamaForCausalLM"], "rope_scaling": {"mrope_section": [6, 5, 5]}}
    assert (runner_mismatch(published, served) is None) == (served == "v1")     # M-RoPE drafts need V1


# ------------------------------------------------------------------------------------------ the trainer's side
def test_draft_config_records_the_runner_and_its_positions(target_dir, tmp_path):
    tcfg = ck.read_config(target_dir / "config.json")
    v1, v2 = (ck.build_draft_config(tcfg, vllm_runner=r) for r in ("v1", "v2"))
    assert v1["eagle3_plugin"]["positions"] == "mrope" and v1["rope_scaling"]["mrope_section"]
    assert v2["eagle3_plugin"] | {"positions": "1d", "vllm_runner": "v2"} == v2["eagle3_plugin"]
    assert v2["rope_scaling"] is None                    # V2 never feeds a draft M-RoPE rows: plain 1-D RoPE
    for fam in ("text", "hunyuan_vl", "qwen2_audio"):    # only M-RoPE families depend on the runner
        assert FAMILIES[fam].draft_positions("v2") == FAMILIES[fam].draft_positions("v1") == FAMILIES[fam].positions
    with pytest.raises(ValueError, match="vllm_runner must be one of"):
        QWEN3_VL.draft_positions("v3")
    from eagle3_plugin.trainer.draft import Eagle3Draft
    for name, cfg in (("v2", v2), ("v2-with-mrope", {**v2, "rope_scaling": v1["rope_scaling"]}),
                      ("mrope-on-v2", {**v2, "eagle3_plugin": {**v2["eagle3_plugin"], "positions": "mrope"},
                                       "rope_scaling": v1["rope_scaling"]})):
        ck.save_draft(tmp_path / name, cfg, Eagle3Draft(v2).checkpoint_tensors())
    assert [f for f in ck.validate(tmp_path / "v2", tcfg) if f.level == "error"] == []
    assert any("mrope_section declared but this draft was trained on '1d'" in f.message
               for f in ck.validate(tmp_path / "v2-with-mrope", tcfg))
    assert any("not what qwen3_vl drafts get on vLLM's v2 runner" in f.message
               for f in ck.validate(tmp_path / "mrope-on-v2", tcfg))


def test_trainer_positions_for_each_runner_on_a_real_image_prompt(target_dir):
    image = _image_sample(target_dir)
    target = Target(target_dir)
    ids = QWEN3_VL.default_aux_layer_ids(target.config)
    feats = target.features({"input_ids": image.input_ids[None], **image.mm_inputs}, ids)
    mrope = feats.positions[:, 0]
    T = image.num_tokens
    running = torch.arange(T)
    assert not torch.equal(mrope[1], mrope[0])                    # image tokens: 2-D (H, W) rows
    assert torch.equal(served_positions(feats, "mrope").positions, feats.positions)
    v2 = served_positions(feats, "1d").positions
    assert v2.shape == (1, T) and torch.equal(v2[0], running)
    # text after the image: all rows equal, the running index shifted by M-RoPE's compression of the image
    after = int((image.input_ids == target.config["image_token_id"]).nonzero().max()) + 2
    delta = mrope[0, after:] - running[after:]
    assert torch.equal(mrope[1, after:], mrope[0, after:]) and torch.equal(mrope[2, after:], mrope[0, after:])
    assert len(set(delta.tolist())) == 1 and int(delta[0]) < 0
    # a text-only prompt (the text before the image): both runners hand the draft the same positions
    first = int((image.input_ids == target.config["vision_start_token_id"]).nonzero().min())
    tf = target.features({"input_ids": image.input_ids[None, :first]}, ids)
    assert torch.equal(tf.positions[0, 0], served_positions(tf, "1d").positions[0])


@pytest.mark.parametrize("runner", ["v1", "v2"])
def test_training_batches_carry_the_runner_positions(target_dir, runner):
    cfg = TrainConfig(target=str(target_dir), data=str(fixtures.CONVERSATIONS), output="", vllm_runner=runner,
                      render_check=0, data_workers=0, progress=False)
    source = FeatureSource(cfg, QWEN3_VL, ck.read_config(target_dir / "config.json"), torch.device("cpu"), LoadReport(),
                           progress=False)
    image = _image_sample(target_dir)
    _, feats = source.batch([image])
    if runner == "v1":
        assert feats.positions.shape == (3, 1, image.num_tokens)
    else:
        assert torch.equal(feats.positions, torch.arange(image.num_tokens)[None])


def test_sglang_feeds_a_draft_without_mrope_section_the_running_index():
    """SGLang's llama_eagle3 swaps in the M-RoPE rows only when the draft config declares mrope_section; otherwise
    the draft keeps ForwardBatch.positions (compute_position: prefix length + offset), so drafts trained for either
    vLLM runner get their trained positions in SGLang (its ForwardBatch positions against the trainer's:
    integration_tests/sglang, qwen3_vl_target)."""
    import importlib.util
    root = Path(importlib.util.find_spec("sglang").submodule_search_locations[0]) / "srt"
    draft = (root / "models/llama_eagle3.py").read_text()
    assert re.search(r"if self\.is_mrope_enabled:\s*positions = forward_batch\.mrope_positions", draft)
    assert re.search(r'self\.is_mrope_enabled = \(\s*rope_scaling is not None and "mrope_section" in rope_scaling',
                     draft)
    fb = (root / "model_executor/forward_batch_info.py").read_text()
    assert re.search(r"torch\.arange\(\s*prefix_len, prefix_len \+ extend_len", fb)
