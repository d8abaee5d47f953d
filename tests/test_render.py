"""trainer/render.py renders training conversations exactly as vLLM 0.32's chat path does.

Every case is compared with vLLM's own renderer code (HfRenderer.render_messages + tokenize_prompts on a real
ModelConfig for a tiny target folder; no engine). vLLM's answers are computed once and kept as JSON under
$EAGLE3_CACHE/render_ref/ (a temp folder when unset), keyed on the cases, the vLLM version and the target files.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from eagle3_plugin.trainer import render as R
from eagle3_plugin.devtools.tiny import cached_tiny_target

import vllm  # noqa: E402  (installed wherever the tests run: the comparisons are against its own code)

from render_cases import (CASES, CONVS, IMG, MODELS, PANEL, TEMPLATES, TEXT_LIST, VL_PH, T,  # noqa: E402
                          case_id, case_messages, txt)


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return Path(os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def targets(cache):
    return {m: cached_tiny_target(m, cache_dir=cache) for m in MODELS}


def _folder_hash(path: Path) -> str:
    h = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"):
        if (path / name).exists():
            h.update((path / name).read_bytes())
    return h.hexdigest()[:12]


@pytest.fixture(scope="session")
def vllm_ref(cache, targets):
    """vLLM's conversation / prompt / ids for every case, computed once."""
    key_src = json.dumps({"v": vllm.__version__, "cases": CASES, "convs": CONVS,
                          "tpl": {p: T(p) for p in PANEL},
                          "targets": {m: _folder_hash(p) for m, p in targets.items()}},
                         sort_keys=True)
    out = cache / "render_ref" / f"{hashlib.sha256(key_src.encode()).hexdigest()[:16]}.json"
    if out.exists():
        return json.loads(out.read_text())
    ref = {}
    for c in CASES:
        ref[case_id(c)] = R.vllm_render(targets[c["model"]], case_messages(c),
                                        chat_template=T(c["template"]) if c["template"] else None,
                                        chat_template_kwargs=c["kwargs"], add_generation_prompt=c["agp"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ref))
    return ref


@pytest.fixture(scope="session")
def renderers(targets):
    made = {}

    def get(model, template, kwargs):
        key = (model, template, json.dumps(kwargs, sort_keys=True))
        if key not in made:
            made[key] = R.ChatRenderer.from_pretrained(
                targets[model], chat_template=TEMPLATES / f"{template}.jinja" if template else None,
                chat_template_kwargs=kwargs)
        return made[key]
    return get


# ------------------------------------------------------------------------------------------------ content format
def test_detect_content_format_matches_vllm(targets):
    from vllm.renderers.hf import _detect_content_format
    own = {m: (p / "chat_template.jinja").read_text() for m, p in targets.items()}
    panel = {p.stem: p.read_text() for p in TEMPLATES.glob("*.jinja")}
    extra = {"top_level_content": "{% for m in messages %}{% set content = m['content'] %}"
                                  "{% for c in content %}{{ c['text'] }}{% endfor %}{% endfor %}",
             "not_jinja": "{% for %}", "plain": "{{ messages[0]['content'] }}"}
    seen = set()
    for name, text in {**own, **panel, **extra}.items():
        want = _detect_content_format(text, default="string")
        assert R.detect_content_format(text) == want, name
        assert R._detect_content_format_copy(text) == want, name
        seen.add(want)
    assert seen == {"string", "openai"}
    assert {p: R.detect_content_format(panel[p]) for p in panel} == {
        "default_system": "string", "drops_non_string": "string", "generation": "openai",
        "list_aware": "openai", "macro_content": "openai", "string_header": "string", "strict_roles": "string",
        "thinking": "string"}


def test_known_placeholders_match_vllm_model_classes():
    from vllm.model_executor.models.registry import ModelRegistry
    for arch, table in R.KNOWN_PLACEHOLDERS.items():
        cls = ModelRegistry._try_load_model_cls(arch)
        for modality, ph in table.items():
            for i in (1, 2, 3):
                assert cls.get_placeholder_str(modality, i) == R._placeholder_text(ph, i), (arch, modality, i)
        got = R.placeholders_for(arch)
        assert set(got) == set(table)
        assert all(R._placeholder_text(got[m], 2) == R._placeholder_text(table[m], 2) for m in table)
    assert R.placeholders_for("Qwen3ForCausalLM") == {}


# ------------------------------------------------------------------------------------------------ rendering
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_render_matches_vllm(case, vllm_ref, renderers):
    ref = vllm_ref[case_id(case)]
    r = renderers(case["model"], case["template"], case["kwargs"])
    msgs = case_messages(case)
    assert r.engine_messages(msgs) == ref["conversation"]
    assert r.render(msgs, case["agp"]) == ref["prompt"]
    ids = r.prompt_ids(msgs, case["agp"])
    assert R.first_difference(ids, ref["prompt_token_ids"], r.tokenizer) is None


def test_pure_python_path_matches_vllm(monkeypatch, vllm_ref, renderers, targets):
    """With vLLM's helpers hidden, the copies (format detection, kwargs filter) give the same renders."""
    monkeypatch.setattr(R, "_vllm_hf", lambda: None)
    for c in CASES:
        if c["model"] not in ("text", "qwen3_vl") or c["agp"]:
            continue
        tpl = TEMPLATES / f"{c['template']}.jinja" if c["template"] else None
        r = R.ChatRenderer(renderers(c["model"], None, {}).tokenizer, renderers(c["model"], None, {}).processor,
                           placeholders=R.KNOWN_PLACEHOLDERS.get("Qwen3VLForConditionalGeneration")
                           if c["model"] == "qwen3_vl" else {},
                           chat_template=tpl, chat_template_kwargs=c["kwargs"])
        ref = vllm_ref[case_id(c)]
        assert r.prompt_ids(case_messages(c)) == ref["prompt_token_ids"], case_id(c)


def test_key_vllm_behaviours(vllm_ref):
    """The facts the module docstring states, read off vLLM's own output."""
    # string format: text parts joined with "\n", empty ones dropped
    c = vllm_ref["text-drops_non_string-text_list-full"]["conversation"]
    assert c[1]["content"] == "What is 2+2?\nAnswer in words." and c[3]["content"] == "And 3+3?"
    # string format, Qwen3-VL: placeholders prepended (grouped, "\n"-joined), counted over the request
    c = vllm_ref["qwen3_vl-drops_non_string-image_list-full"]["conversation"]
    assert c[0]["content"] == f"{VL_PH}\nDescribe it." and c[2]["content"] == f"{VL_PH}\n{VL_PH}\nNow these:\nand"
    c = vllm_ref["qwen3_vl-drops_non_string-image_inline-full"]["conversation"]
    assert c[0]["content"] == f"look {VL_PH} here"
    # Qwen2-Audio numbers its audio over the whole request
    c = vllm_ref["qwen2_audio-string_header-audio_list-full"]["conversation"]
    assert c[2]["content"].startswith("Audio 2: <|audio_bos|><|AUDIO|><|audio_eos|>\nAudio 3: ")
    # HunYuanVL (Transformers backend) gets no placeholder at all: the image vanishes from a string template
    assert vllm_ref["hunyuan_vl-string_header-image_list-full"]["conversation"][0]["content"] == "Describe it."
    # openai format: bare media parts
    assert vllm_ref["qwen3_vl-own-image_list-full"]["conversation"][0]["content"] == [{"type": "image"},
                                                                                    txt("Describe it.")]


def test_old_rendering_differs_and_first_difference_says_where(targets, vllm_ref, renderers):
    """The issue: rendering list content through processor/tokenizer.apply_chat_template as-is drops it."""
    r = renderers("text", "drops_non_string", {})
    old = r.tokenizer.apply_chat_template(TEXT_LIST, chat_template=T("drops_non_string"), tokenize=False)
    old_ids = r.tokenizer(old, add_special_tokens=False)["input_ids"]
    ref = vllm_ref["text-drops_non_string-text_list-full"]["prompt_token_ids"]
    line = R.first_difference(old_ids, ref, r.tokenizer)
    assert line is not None and line.startswith("first difference at token ") and "\n" not in line
    assert "Be brief" in r.tokenizer.decode(ref) and "Be brief" not in old
    assert r.prompt_ids(TEXT_LIST) == ref


def test_template_source_resolution(targets):
    vl = R.ChatRenderer.from_pretrained(targets["qwen3_vl"])
    assert vl.template_source.startswith("the processor's chat template") and vl.content_format == "openai"
    assert set(vl.placeholders) == {"image", "video"}
    txt_r = R.ChatRenderer.from_pretrained(targets["text"])
    assert txt_r.template_source.startswith("the tokenizer's chat template") and txt_r.placeholders == {}
    lit = R.ChatRenderer(txt_r.tokenizer, chat_template=T("string_header"))
    assert lit.template_source == "chat_template= (literal text)" and lit.content_format == "string"
    with pytest.raises(ValueError, match="takes no media"):
        txt_r.render([{"role": "user", "content": [dict(IMG), txt("hi")]}])
    with pytest.raises(ValueError, match="may not set"):
        R.ChatRenderer(txt_r.tokenizer, chat_template_kwargs={"tokenize": True})


def test_raising_template_gives_clear_error(targets):
    r = R.ChatRenderer.from_pretrained(targets["text"], chat_template=TEMPLATES / "strict_roles.jinja")
    bad = [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"},
           {"role": "assistant", "content": "ok"}]
    with pytest.raises(R.ChatTemplateError) as e:
        r.render(bad)
    msg = str(e.value)
    assert "--chat-template " + str(TEMPLATES / "strict_roles.jinja") in msg
    assert "at message 1 (role 'user')" in msg
    assert "Conversation roles must alternate" in msg and "Fix: pass --chat-template FILE" in msg
    # vLLM rejects the same conversation
    from vllm.exceptions import VLLMValidationError
    with pytest.raises(VLLMValidationError, match="roles must alternate"):
        R.vllm_render(targets["text"], bad, chat_template=T("strict_roles"))
    # a conversation it accepts renders normally
    assert r.render(bad[1:]).startswith("<|im_start|>user\nagain")
