"""Issue 6, part 1: SGLang's own plugin loader finds our entry point, and afterwards SGLang resolves every architecture
we claim; SGLANG_PLUGINS filters us out by entry-point name."""
from __future__ import annotations

import pytest

from eagle3_plugin.families import FAMILIES

pytestmark = pytest.mark.sglang

OURS = "eagle3_plugin.sglang."


@pytest.fixture(scope="module")
def reg(sgl_run):
    return sgl_run(["plugin_registration"])["plugin_registration"]


def test_entry_point_discovered_and_run(reg):
    assert "eagle3_plugin" in reg["entry_points"]
    assert reg["register_ran"]
    skipped = {k: v for k, v in reg["report"].items() if v[0] == "skipped"}
    assert not skipped, skipped


def test_registry_resolves_every_claimed_architecture(reg):
    for fam in FAMILIES.values():
        got = reg["resolved"][fam.draft_architecture]
        assert got["name"] == fam.draft_architecture
        assert got["is_eagle3_draft"], got                      # SGLang's EAGLE-3 worker accepts it
        if fam.name != "text":
            assert got["class"] == f"{OURS}drafts.{fam.draft_architecture}"
    hy = reg["resolved"]["HunYuanVLForConditionalGeneration"]
    assert hy["class"] == f"{OURS}hunyuan_vl.model.HunYuanVLForConditionalGeneration"
    assert reg["drafts_in_registry_once"] == 1


def test_targets_have_capture_methods(reg):
    assert all(reg["qwen2_audio_methods"].values()), reg["qwen2_audio_methods"]
    assert reg["qwen2_audio_audio_mask"]
    assert all(reg["hunyuan_methods"].values()), reg["hunyuan_methods"]
    assert reg["report"]["target Qwen3VLForConditionalGeneration"][0] == "native"


def test_hunyuan_vl_served_natively_by_sglang_config_path(reg):
    # SGLang's ModelConfig + get_model_architecture + processor lookup on the tiny HunyuanOCR checkpoint
    mc = reg["hunyuan_model_config"]
    assert mc["is_multimodal"] and mc["model_is_mrope"]
    assert mc["model_class"] == f"{OURS}hunyuan_vl.model.HunYuanVLForConditionalGeneration"
    assert mc["processor"] == f"{OURS}hunyuan_vl.model.HunYuanVLMultimodalProcessor"
    assert reg["hunyuan_in_mm_archs"]


def test_eagle_worker_prefill_wrapped(reg):
    assert reg["worker_wrapped"]


def test_sglang_plugins_filter_excludes_us(sgl_run):
    other = sgl_run(["plugin_filtered"], env={"SGLANG_PLUGINS": "someone_else"})["plugin_filtered"]
    assert not other["register_ran"] and other["report"] == []
    assert not any(other["registry_has"].values()), other["registry_has"]
    assert not other["qwen2_audio_capture"]


def test_sglang_plugins_filter_includes_us_by_name(sgl_run):
    mine = sgl_run(["plugin_filtered"], env={"SGLANG_PLUGINS": "someone_else,eagle3_plugin"})["plugin_filtered"]
    assert mine["register_ran"]
    assert all(mine["registry_has"].values()), mine["registry_has"]
    assert mine["qwen2_audio_capture"]
