"""The family table and the draft checkpoint format (no engines)."""
import json

import pytest
import torch

from eagle3_plugin import checkpoint as ck
from eagle3_plugin.families import FAMILIES, family_for_target
from eagle3_plugin.trainer.draft import Eagle3Draft

QWEN3_VL = {"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
            "text_config": {"num_hidden_layers": 8, "hidden_size": 128, "intermediate_size": 256,
                            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 1024,
                            "rope_parameters": {"rope_type": "default", "rope_theta": 5e6,
                                                "mrope_section": [6, 5, 5], "mrope_interleaved": True}},
            "vision_config": {"deepstack_visual_indexes": [0, 1]}, "image_token_id": 12, "video_token_id": 13}
TEXT = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "num_hidden_layers": 12, "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
        "vocab_size": 500, "rope_theta": 1e6}


def test_family_lookup_and_errors():
    assert family_for_target(QWEN3_VL).name == "qwen3_vl"
    assert family_for_target(TEXT).name == "text"
    with pytest.raises(ValueError, match="unsupported target.*Gemma"):
        family_for_target({"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3"})


def test_default_aux_ids_avoid_deepstack_and_are_valid():
    assert FAMILIES["qwen3_vl"].default_aux_layer_ids(QWEN3_VL) == (3, 4, 5)   # deepstack feeds layers 0-1
    assert FAMILIES["text"].default_aux_layer_ids(TEXT) == (2, 6, 9)          # EAGLE-3's (2, L//2, L-3)
    with pytest.raises(ValueError, match="too few"):
        FAMILIES["text"].default_aux_layer_ids({**TEXT, "num_hidden_layers": 4})


def test_draft_config_records_family_positions_and_both_aux_conventions():
    cfg = ck.build_draft_config(QWEN3_VL, draft_vocab_size=300)
    assert cfg["architectures"] == ["Eagle3Qwen3VLForCausalLM"]
    assert cfg["eagle_aux_hidden_state_layer_ids"] == [3, 4, 5]                       # vLLM: input of layer L
    assert cfg["eagle_config"]["eagle_aux_hidden_state_layer_ids"] == [2, 3, 4]       # SGLang: output of layer L-1
    assert cfg["rope_scaling"] == {"rope_type": "default", "mrope_section": [6, 5, 5], "mrope_interleaved": True}
    assert cfg["rope_theta"] == 5e6 and cfg["draft_vocab_size"] == 300 and cfg["vocab_size"] == 1024
    assert cfg["eagle3_plugin"]["placeholder_token_ids"] == [12, 13]
    assert ck.build_draft_config(TEXT)["rope_scaling"] is None


def _write(tmp_path, target=TEXT, dvocab=None, mutate=None):
    cfg = ck.build_draft_config(target, draft_vocab_size=dvocab)
    d = Eagle3Draft(cfg)
    if dvocab:
        d.set_vocab(torch.arange(0, 2 * dvocab, 2))
    tensors = d.checkpoint_tensors()
    if mutate:
        mutate(cfg, tensors)
    out = tmp_path / "draft"
    ck.save_draft(out, cfg, tensors)
    return out


def test_written_draft_validates_against_its_target(tmp_path):
    out = _write(tmp_path, dvocab=100)
    assert [f for f in ck.validate(out, TEXT) if f.level == "error"] == []
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("d2t").dtype == torch.int64 and f.get_tensor("t2d").dtype == torch.bool
        assert "embed_tokens.weight" not in f.keys()


def test_full_vocab_draft_has_no_d2t(tmp_path):
    out = _write(tmp_path)
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "d2t" not in f.keys()


def test_writer_refuses_missing_or_misshapen_tensors(tmp_path):
    with pytest.raises(ValueError, match="missing tensor 'fc.weight'"):
        _write(tmp_path, mutate=lambda c, t: t.pop("fc.weight"))
    with pytest.raises(ValueError, match=r"'norm.weight' has shape \[3\]"):
        _write(tmp_path, mutate=lambda c, t: t.__setitem__("norm.weight", torch.ones(3)))
    assert not (tmp_path / "draft").exists()   # nothing half-written


def test_check_catches_missing_weight_wrong_shape_wrong_aux(tmp_path):
    from safetensors.torch import load_file, save_file
    out = _write(tmp_path, dvocab=100)
    w = out / "model.safetensors"
    good = load_file(str(w))
    bad = dict(good)
    bad.pop("midlayer.mlp.up_proj.weight")
    save_file(bad, str(w))
    errs = [str(f) for f in ck.validate(out, TEXT) if f.level == "error"]
    assert any("missing tensor 'midlayer.mlp.up_proj.weight' [128, 64]" in e for e in errs), errs
    bad = dict(good)
    bad["lm_head.weight"] = torch.zeros(99, 64)
    save_file(bad, str(w))
    errs = [str(f) for f in ck.validate(out, TEXT) if f.level == "error"]
    assert any("'lm_head.weight' has shape [99, 64], config.json implies [100, 64]" in e for e in errs), errs
    save_file(good, str(w))
    cfg = json.loads((out / "config.json").read_text())
    cfg["eagle_aux_hidden_state_layer_ids"] = [2, 6, 12]
    (out / "config.json").write_text(json.dumps(cfg))
    errs = [str(f) for f in ck.validate(out, TEXT) if f.level == "error"]
    assert any("out of range for a 12-layer target" in e for e in errs), errs
    assert any("must be the top-level ids minus one" in e for e in errs), errs


def test_check_catches_inconsistent_vocab_maps(tmp_path):
    from safetensors.torch import load_file, save_file
    out = _write(tmp_path, dvocab=100)
    sd = load_file(str(out / "model.safetensors"))
    sd["t2d"] = torch.zeros_like(sd["t2d"])
    sd["t2d"][:100] = True
    save_file(sd, str(out / "model.safetensors"))
    errs = [str(f) for f in ck.validate(out, TEXT) if f.level == "error"]
    assert any("t2d is not the indicator of d2t" in e for e in errs), errs


def test_atomic_write_keeps_previous_draft_on_failure(tmp_path, monkeypatch):
    out = _write(tmp_path)
    before = (out / "model.safetensors").read_bytes()
    import safetensors.torch as st

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(st, "save_file", boom)
    cfg = json.loads((out / "config.json").read_text())
    with pytest.raises(OSError):
        ck.save_draft(out, cfg, Eagle3Draft(cfg).checkpoint_tensors())
    assert (out / "model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["draft"]   # temp dir cleaned up
