"""Issue 6, part 2: a draft in our checkpoint format loads into SGLang's EAGLE-3 draft classes with every parameter
written, and SGLang's draft forward (extend, two requests in one batch) equals the trainer's ``forward_step0``.

Tolerances are fp32 (both sides run fp32 on the same bf16-stored weights). Each case has a control that must FAIL the
same comparison, so the checks can fail: SGLang's stock draft on a batch with media (it embeds placeholders with
``mm_input_embeds``) or with ``norm_before_residual`` (it ignores the flag), and 1-D positions for an M-RoPE draft.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.sglang

TOL = 2e-5          # observed ~7e-7
CONTROL_MIN = 1e-2  # observed 0.3 - 0.9


@pytest.fixture(scope="module")
def worker(sgl_run, tmp_path_factory):
    """One SGLang worker process for both checks (SGLang's import is the slow part); its fallback records go to a
    state directory of this test's own."""
    state = tmp_path_factory.mktemp("fallback-state")
    return sgl_run(["drafts", "draft_input_fallback"], env={"EAGLE3_PLUGIN_STATE_DIR": str(state)}), state


@pytest.fixture(scope="module")
def drafts(worker):
    return worker[0]["drafts"]


CASES = {
    "text_llama_eagle3": "LlamaForCausalLMEagle3",
    "qwen3_vl": "Eagle3Qwen3VLForCausalLM",
    "hunyuan_vl": "Eagle3HunYuanVLForCausalLM",
    "qwen2_audio": "Eagle3Qwen2AudioForCausalLM",
    "qwen2_audio_norm_before_residual": "Eagle3Qwen2AudioForCausalLM",
    "qwen3_vl_as_llama_eagle3": "LlamaForCausalLMEagle3",
    "qwen3_vl_trained_by_eagle3_train": "Eagle3Qwen3VLForCausalLM",    # `eagle3-train train`'s own output
}


@pytest.mark.parametrize("case", CASES)
def test_every_parameter_written(drafts, case):
    r = drafts[case]
    assert r["class"] == CASES[case]
    # embed_tokens is the one parameter a draft checkpoint does not carry: the EAGLE worker shares the target's
    assert r["unwritten_params"] == ["model.embed_tokens.weight"], r["unwritten_params"]


@pytest.mark.parametrize("case", CASES)
def test_forward_equals_trainer(drafts, case):
    r = drafts[case]
    assert r["logits_absmax"] > 0.5
    assert r["logits_maxdiff"] < TOL, r
    assert r["prenorm_maxdiff"] < TOL, r


def test_pruned_vocab_maps(drafts):
    for case in ("text_llama_eagle3", "hunyuan_vl", "qwen3_vl_trained_by_eagle3_train"):
        assert drafts[case]["hot_token_id_ok"]
        assert drafts[case]["draft_vocab"] < 1024


def test_qwen3_vl_draft_uses_mrope_rows(drafts):
    assert drafts["qwen3_vl_trained_by_eagle3_train"]["mrope_enabled"]
    for case in ("qwen3_vl", "qwen3_vl_as_llama_eagle3"):   # (a 6-step draft barely depends on positions)
        r = drafts[case]
        assert r["mrope_enabled"]
        assert r["mrope_1d_control_maxdiff"] > CONTROL_MIN, r
    for case in ("hunyuan_vl", "qwen2_audio"):
        assert not drafts[case]["mrope_enabled"]      # 1-D positions (HunYuanVL: row 0 of XD-RoPE)


@pytest.mark.parametrize("case", ["qwen3_vl", "hunyuan_vl", "qwen2_audio", "qwen3_vl_trained_by_eagle3_train"])
def test_placeholders_embedded_as_text_despite_mm_input_embeds(drafts, case):
    """The batch carries mm_input_embeds and SGLang's hash sentinels at the placeholders; ours match the trainer
    (text embedding of the placeholder id), SGLang's stock draft on the same batch does not."""
    r = drafts[case]
    assert r["logits_maxdiff"] < TOL
    assert r["stock_logits_maxdiff"] > CONTROL_MIN, r
    assert r["prefill_hook"] == {"ran": True, "ids_restored": True, "mm_input_embeds_dropped": True}


def test_norm_before_residual_honoured(drafts):
    r = drafts["qwen2_audio_norm_before_residual"]
    assert r["logits_maxdiff"] < TOL
    assert r["stock_logits_maxdiff"] > CONTROL_MIN, r


def test_placeholder_restore_in_chunked_prefill(drafts):
    assert drafts["restore_with_prefix"]["ok"], drafts["restore_with_prefix"]


# ------------------------------------------------------------------------------- the prefill hook's fallback
WHAT = "preparing the text placeholder ids for the Eagle3Qwen3VLForCausalLM draft prefill"
CONSEQUENCE = "Acceptance is lower when this happens: that draft prefill used SGLang's default inputs"


@pytest.fixture(scope="module")
def fallback(worker):
    return worker[0]["draft_input_fallback"]


def test_prefill_hook_on_sglang_real_method(fallback):
    """Control: SGLang's real EagleDraftWorker._draft_extend_for_prefill on a real ScheduleBatch hands the draft
    forward the restored placeholder ids and no mm_input_embeds; nothing is logged or counted."""
    assert fallback["counts_before"] == {}          # the drafts check ran in this process without a fallback
    c = fallback["steps"]["control"]
    assert c["placeholders_restored"] and c["ids_in_vocab"] and not c["mm_input_embeds_reached_draft"], c
    assert c["spec_info"] == "EagleDraftExtendInput" and c["warnings"] == [] and c["total"] == 0


def test_fallback_is_a_warning_once_per_cause_and_counted(fallback):
    s = fallback["steps"]
    for name in ("prefix_lens_unset", "prefix_lens_unset_again", "flat_offsets"):
        # SGLang's default inputs reached the draft: the target's media embeddings, the hash sentinels
        assert s[name]["mm_input_embeds_reached_draft"] and not s[name]["placeholders_restored"], (name, s[name])
    (w1,) = s["prefix_lens_unset"]["warnings"]
    assert w1["logger"] == "sglang.eagle3_plugin" and w1["level"] == "WARNING"
    assert w1["message"].startswith(f"eagle3-plugin: {WHAT}"), w1
    assert "TypeError: 'NoneType' object is not iterable" in w1["message"]
    assert "in restore_placeholder_ids" in w1["message"] and CONSEQUENCE in w1["message"]
    assert "`eagle3-train doctor` shows the count" in w1["message"]
    assert s["prefix_lens_unset_again"]["warnings"] == []          # the same cause: counted, not logged again
    (w2,) = s["flat_offsets"]["warnings"]                             # another cause: logged once
    assert w2["message"].startswith(f"eagle3-plugin: {WHAT}") and "cannot unpack non-iterable int" in w2["message"]
    assert [s[n]["total"] for n in ("prefix_lens_unset", "prefix_lens_unset_again", "flat_offsets")] == [1, 2, 3]
    per_cause = sorted(c["count"] for c in fallback["counts"]["sglang_draft_inputs"].values())
    assert per_cause == [1, 2]


def test_doctor_reports_the_fallbacks(fallback, worker, monkeypatch):
    # doctor in the engine's own process (SGLang imported, the in-process counter) ...
    assert "SGLang draft input fallbacks: 3 (acceptance is lower when this happens:" in fallback["doctor"]
    assert "this process: TypeError: 'NoneType' object is not iterable" in fallback["doctor"]
    # ... and in another process (this one), from the record the engine process wrote (at its exit)
    from eagle3_plugin import doctor
    monkeypatch.setenv("EAGLE3_PLUGIN_STATE_DIR", str(worker[1]))
    lines = doctor.fallback_lines("sglang")
    assert lines[0].startswith("SGLang draft input fallbacks: 3 (acceptance is lower when this happens:"), lines
    assert sum("(ended, last written" in line for line in lines) == 2, lines      # one line per cause
    monkeypatch.setenv("EAGLE3_PLUGIN_STATE_DIR", str(worker[1] / "empty"))
    assert doctor.fallback_lines("sglang") == [
        f"SGLang draft input fallbacks: 0 (counted in this process and the records in {worker[1] / 'empty'})"]
