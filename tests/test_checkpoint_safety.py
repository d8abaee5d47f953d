"""The draft writer never destroys what it did not write and never writes a broken draft; `eagle3-train check`
catches non-finite weights and missing config fields, and answers bad paths with one line."""
import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from eagle3_plugin import checkpoint as ck
from eagle3_plugin.entry_points.cli import main
from eagle3_plugin.outputs import MARKER, OutputError
from eagle3_plugin.trainer.draft import Eagle3Draft

TEXT = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "num_hidden_layers": 12, "hidden_size": 64,
        "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
        "vocab_size": 500, "rope_theta": 1e6}


def _draft(dvocab=100):
    cfg = ck.build_draft_config(TEXT, draft_vocab_size=dvocab)
    d = Eagle3Draft(cfg)
    d.set_vocab(torch.arange(0, 2 * dvocab, 2))
    return cfg, d.checkpoint_tensors()


def _errors(path, target=TEXT):
    return [str(f) for f in ck.validate(path, target) if f.level == "error"]


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_save_draft_keeps_files_it_did_not_write(tmp_path):
    out = tmp_path / "draft"
    cfg, tensors = _draft()
    ck.save_draft(out, cfg, tensors, extra_files={"README.md": "card"})
    (out / "notes.md").write_text("mine")
    (out / "train_state").mkdir()
    (out / "train_state" / "history.json").write_text("{}")
    ck.save_draft(out, cfg, tensors)
    assert (out / "notes.md").read_text() == "mine" and (out / "train_state" / "history.json").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, "README.md", "config.json", "model.safetensors", "notes.md", "train_state"])   # no temp files
    written = json.loads((out / MARKER).read_text())["written"]
    assert sorted(written) == ["README.md", "config.json", "model.safetensors"]
    assert _errors(out) == []


def test_save_draft_refuses_a_folder_it_does_not_own(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "someone else"}')
    cfg, tensors = _draft()
    with pytest.raises(OutputError, match="not written by eagle3-train"):
        ck.save_draft(out, cfg, tensors)
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert json.loads((out / "config.json").read_text()) == {"model_type": "someone else"}


def test_save_draft_writes_config_last_with_umask_modes(tmp_path, umask022, monkeypatch):
    replaced = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(os.path.basename(b)), real(a, b)))
    out = ck.save_draft(tmp_path / "new" / "draft", *_draft())
    assert [n for n in replaced if n != MARKER] == ["model.safetensors", "config.json"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755
    for name in ("config.json", "model.safetensors", MARKER):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_save_draft_refuses_non_finite_weights(tmp_path, value):
    cfg, tensors = _draft()
    tensors["fc.weight"] = tensors["fc.weight"].clone()
    tensors["fc.weight"][0, 0] = value
    with pytest.raises(ValueError, match=r"non-finite weights in fc.weight: the training diverged \(lower --lr\)"):
        ck.save_draft(tmp_path / "draft", cfg, tensors)
    assert not (tmp_path / "draft").exists()


def test_save_draft_refuses_weights_that_overflow_the_saved_dtype(tmp_path):
    cfg, tensors = _draft()
    cfg["torch_dtype"] = "float16"
    tensors["norm.weight"] = torch.full_like(tensors["norm.weight"], 1e6)   # finite in fp32, inf in fp16
    with pytest.raises(ValueError, match="non-finite weights in norm.weight"):
        ck.save_draft(tmp_path / "draft", cfg, tensors)


def test_check_reads_every_tensor_and_names_the_non_finite_one(tmp_path, capsys):
    out = ck.save_draft(tmp_path / "draft", *_draft())
    sd = load_file(str(out / "model.safetensors"))
    sd["midlayer.mlp.down_proj.weight"][3, 4] = float("nan")
    save_file(sd, str(out / "model.safetensors"))
    errs = _errors(out)
    assert len(errs) == 1 and "non-finite weights (NaN/Inf) in midlayer.mlp.down_proj.weight" in errs[0], errs
    assert main(["check", str(out)]) == 1
    assert "FAILED (1 errors" in capsys.readouterr().out


@pytest.mark.parametrize("field", ["model_type", "rms_norm_eps", "rope_theta", "draft_vocab_size",
                                   "num_hidden_layers", "norm_before_residual"])
def test_check_fails_on_a_config_missing_a_field_an_engine_needs(tmp_path, field):
    out = ck.save_draft(tmp_path / "draft", *_draft())
    cfg = json.loads((out / "config.json").read_text())
    del cfg[field]
    (out / "config.json").write_text(json.dumps(cfg))
    errs = _errors(out)
    assert any(f"config.json: {field} missing (vllm" in e for e in errs), errs


def test_check_warns_without_aux_ids_since_published_drafts_use_the_engine_defaults(tmp_path):
    out = ck.save_draft(tmp_path / "draft", *_draft())
    cfg = json.loads((out / "config.json").read_text())
    del cfg["eagle_aux_hidden_state_layer_ids"], cfg["eagle_config"]
    (out / "config.json").write_text(json.dumps(cfg))
    findings = ck.validate(out)
    assert not [f for f in findings if f.level == "error"], findings
    assert any("eagle_aux_hidden_state_layer_ids missing" in f.message for f in findings if f.level == "warning")


def test_check_field_rules(tmp_path):
    cfg, _ = _draft()
    assert ck.check_config_fields(cfg) == []
    no_theta = {k: v for k, v in cfg.items() if k != "rope_theta"}
    assert ck.check_config_fields({**no_theta, "rope_parameters": {"rope_theta": 1e6}}) == []   # either place
    assert ck.check_config_fields({k: v for k, v in cfg.items() if k != "head_dim"}) == []     # 64 / 2 heads
    assert ck.check_config_fields({**cfg, "head_dim": None, "num_attention_heads": 3})[0].startswith("head_dim")
    nested = {k: v for k, v in cfg.items() if k != "eagle_config"}
    assert [p.split(" ")[0] for p in ck.check_config_fields(nested)] == [
        "eagle_config.eagle_aux_hidden_state_layer_ids"]
    assert "must be false" in ck.check_config_fields({**cfg, "tie_word_embeddings": True})[0]
    assert "must be true or false" in ck.check_config_fields({**cfg, "norm_before_residual": "no"})[0]
    no_th = {k: v for k, v in cfg.items() if k != "target_hidden_size"}
    assert ck.check_config_fields(no_th, target_hidden=64) == []
    assert "target's hidden size 96 differs" in ck.check_config_fields(no_th, target_hidden=96)[0]
    # the field table names, with a reason, everything both engines read without a safe default
    for engine in ("vllm", "sglang"):
        assert {"architectures", "model_type", "hidden_size", "rms_norm_eps", "rope_theta", "vocab_size",
                "draft_vocab_size", "num_hidden_layers"} <= set(ck.REQUIRED_FIELDS[engine])
        assert all(reason for reason in ck.REQUIRED_FIELDS[engine].values())


def test_check_answers_bad_paths_with_one_clean_line(tmp_path, capsys):
    out = ck.save_draft(tmp_path / "draft", *_draft())
    (tmp_path / "empty").mkdir()
    cases = {out / "model.safetensors": "is a file; give the draft folder that holds config.json (did you mean",
             tmp_path / "missing": "no such folder",
             tmp_path / "empty": "no config.json here, so this is not a draft folder"}
    for path, message in cases.items():
        assert main(["check", str(path)]) == 1
        printed = capsys.readouterr()
        assert "Traceback" not in printed.out + printed.err
        lines = printed.out.splitlines()
        assert len(lines) == 2 and lines[0].startswith(f"error: {path}: {message}"), lines
    assert main(["check", str(out), "--target", str(out / "config.json")]) == 2
    assert "error: " in capsys.readouterr().out
    (out / "config.json").write_text("{oops")
    assert main(["check", str(out)]) == 1
    assert "invalid JSON" in capsys.readouterr().out
