"""Model names: a local folder or a Hub id, resolved the same way for every command. The Hub path is tested offline
against a local Hub cache laid out as huggingface_hub lays it out (models--org--name/snapshots/<rev>, refs/main)."""
from __future__ import annotations

import os
import shutil

import pytest

from eagle3_plugin.devtools.tiny import cached_tiny_target
from eagle3_plugin.models import ModelNotFound, model_config, resolve_model


@pytest.fixture(scope="module")
def text_target(tmp_path_factory):
    return cached_tiny_target("text", cache_dir=os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("c"))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, text_target):
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-text"
    shutil.copytree(text_target, repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return repo / "snapshots" / rev


def test_a_hub_id_resolves_to_its_cached_snapshot(hub_cache):
    assert resolve_model("tiny-org/tiny-text") == hub_cache
    assert model_config("tiny-org/tiny-text")["architectures"] == ["Qwen3ForCausalLM"]


def test_the_trainer_loads_a_target_by_hub_id(hub_cache):
    from eagle3_plugin.families import FAMILIES
    from eagle3_plugin.trainer.data import Tokenizer
    from eagle3_plugin.trainer.target import Target
    t = Target("tiny-org/tiny-text")
    assert t.path == hub_cache and t.num_layers == 8
    assert Tokenizer("tiny-org/tiny-text", FAMILIES["text"]).renderer.tokenizer is not None


def test_offline_and_not_cached_is_one_clear_error(hub_cache):
    with pytest.raises(ModelNotFound) as e:
        resolve_model("tiny-org/not-there")
    assert "HF_HUB_OFFLINE is set and it is not in the local Hub cache" in str(e.value)
    assert "huggingface-cli download tiny-org/not-there" in str(e.value)


def test_local_folders_and_bad_names(tmp_path, text_target):
    assert resolve_model(text_target) == text_target
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no config.json in this folder"):
        resolve_model(tmp_path / "empty")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ModelNotFound, match="is a file"):
        resolve_model(tmp_path / "f.txt")
    with pytest.raises(ModelNotFound, match="not a Hub id of the form org/name"):
        resolve_model(tmp_path / "a" / "b" / "c")
