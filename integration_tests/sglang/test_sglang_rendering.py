"""SGLang 0.5.23's own chat rendering of the rendering-test conversations, against ours.

The worker check ``chat_rendering`` (sgl_worker.py) runs every tests/render_cases.py SGLANG_CASES conversation --
each tiny target x (its own template + every panel template) x {list content, plain strings} x {text, the target's
media} x template kwargs x {full, with the generation prompt} -- through SGLang's own serving objects, built as its
HTTP server builds them (TemplateManager.initialize_templates, OpenAIServingTokenize / OpenAIServingChat on a
tokenizer-manager stand-in holding SGLang's own ModelConfig, tokenizer, processor and multimodal processor):

* ``/v1/tokenize`` with ``add_generation_prompt`` (OpenAIServingTokenize._tokenize_chat_request ->
  OpenAIServingChat._process_messages -> _apply_jinja_template -> process_content_for_template_format ->
  tokenizer.apply_chat_template + encode): the messages the template gets, the prompt text, the ids;
* the same request through OpenAIServingChat._convert_to_internal_request and, for a text prompt (a request with
  media), SGLang's multimodal processor (process_mm_data_async), as TokenizerManager._tokenize_one_request runs it:
  the ids the scheduler gets (media runs folded back to one token);
* a plain chat completion body for the generation-prompt cases; continue_final_message for SGLANG_CFM_CASES;
* detect_jinja_template_content_format on every template text we know.

Here: (1) where SGLang's rendering equals ours (``ChatRenderer``, vLLM-faithful) it must be equal, id for id;
where it differs, the difference must be one the DIVERGENCES table predicts, with exactly the predicted values --
any other difference fails; (2) ``ChatRenderer(..., engine="sglang")`` must equal SGLang's rendering in every case.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.sglang

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

import render_cases as rc  # noqa: E402  (tests/render_cases.py, shared with tests/test_render.py)

from eagle3_plugin.trainer import render as R  # noqa: E402

SGL_IMAGE_TOKEN = "<|vision_start|><|image_pad|><|vision_end|>"   # sglang/srt/multimodal/processors/qwen_vl.py:399


@dataclass(frozen=True)
class Divergence:
    what: str
    source: str   # file:line under site-packages/


# Where SGLang renders a conversation differently from vLLM (= ChatRenderer(engine="vllm")) by design. Which
# messages / cases each entry covers is predicted from the conversation and the content format alone
# (_message_divergences); the exact difference is asserted (_expected_sglang_message).
DIVERGENCES = {
    "openai_string_kept": Divergence(
        "openai format, string content: SGLang hands the template the string itself; vLLM wraps it as one text "
        "part [{'type': 'text', 'text': s}] (the same ids wherever the template takes both, as the panel does)",
        "sglang/srt/parser/jinja_template_utils.py:239-241 vs vllm/renderers/chat_utils.py:2086-2089 + "
        "wrap_dicts (:2095)"),
    "string_space_join": Divergence(
        "string format, list content: SGLang joins ALL text parts with ' ' (empty ones too); vLLM joins the "
        "non-empty ones with '\\n'",
        "sglang/srt/parser/jinja_template_utils.py:325-338 vs vllm/renderers/chat_utils.py:1862-1885 "
        "(empty texts dropped at :1867, '\\n' join at :1883)"),
    "string_media_dropped": Divergence(
        "string format: SGLang drops media parts with no placeholder and never collects the media (the request "
        "turns text-only); vLLM prepends the model's placeholder (Qwen3-VL, Qwen2-Audio; HunYuanVL has none)",
        "sglang/srt/parser/jinja_template_utils.py:325-333 (only the openai branch appends media, :258) vs "
        "vllm/renderers/chat_utils.py:1569-1623 + get_placeholder_str"),
    "reasoning_fields": Divergence(
        "assistant `reasoning` is no field of SGLang's message model (dropped) and an input `reasoning_content` "
        "is kept; vLLM copies `reasoning` to reasoning + reasoning_content and drops an input reasoning_content",
        "sglang/srt/entrypoints/openai/protocol.py:754-763 (model_dump at serving_chat.py:2036) vs "
        "vllm/renderers/chat_utils.py:2104-2113"),
}

# What SGLang's multimodal processor then does with a rendered request that still carries media (the "openai"
# format; tokenizer_manager.py:1202 -> BaseMultimodalProcessor.load_mm_data): it loads one media item per
# placeholder it finds in the text (base_processor.py:1487-1515). The rendering itself is the same as vLLM's in
# these cases; vLLM's own multimodal processor is not run here. Predicted from the prompt text (_media_outcome).
PROCESSOR_OUTCOMES = {
    "placeholder_count_rejected": Divergence(
        "more placeholders in the text than media items (Qwen3-VL: the text already holds "
        "<|vision_start|><|image_pad|><|vision_end|> next to an image part): the request is rejected",
        "sglang/srt/multimodal/processors/base_processor.py:216-231 (raised at :1563), image regex "
        "qwen_vl.py:398-403"),
    "surplus_media_ignored": Divergence(
        "fewer placeholders than media items (HunYuanVL with a panel template that writes Qwen's image markers): "
        "the items without a placeholder are silently not loaded, the request goes on without them",
        "sglang/srt/multimodal/processors/base_processor.py:1487-1515 (data iterators advanced per match only); "
        "HunYuanVL's marker: eagle3_plugin/sglang/hunyuan_vl/model.py:569-578"),
}

# Template texts whose content format the two engines answer differently (everything else must agree, the whole
# panel and every tiny target's own template included): name -> (vLLM, SGLang, why).
FORMAT_DIVERGENCES = {
    "probe:top_level_content": ("openai", "string",
                                "vLLM also takes a top-level `for c in content` (vllm/renderers/hf.py:405-470); "
                                "SGLang only loops over message|msg|m content (jinja_template_utils.py:106-117)"),
    "probe:alias_loop": ("openai", "string",
                         "vLLM tracks any `for X in messages` variable (hf.py:343-402); SGLang only the names "
                         "message, msg, m (jinja_template_utils.py:110-117)"),
    "probe:macro_plain_words": ("openai", "string",
                                "vLLM follows content into a macro parameter (hf.py:405-470); SGLang has no macro "
                                "tracking and the text has no media word (jinja_template_utils.py:95-119)"),
    "probe:string_mentions_image": ("string", "openai",
                                    "SGLang: any template text containing image/audio/video/vision is 'openai' "
                                    "outright, a comment too (jinja_template_utils.py:95-99)"),
}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def sgl_trained_draft():
    """conftest's sgl_run needs one; the rendering check trains and loads no draft, so none is built here."""
    return REPO / ".cache" / "no-trained-draft-needed-for-chat-rendering"


@pytest.fixture(scope="module")
def sgl(sgl_run):
    return sgl_run(["chat_rendering"], timeout=600)["chat_rendering"]


@pytest.fixture(scope="module")
def renderers(sgl_tiny_targets):
    made = {}

    def get(model, template, kwargs, engine):
        key = (model, template, json.dumps(kwargs, sort_keys=True), engine)
        if key not in made:
            made[key] = R.ChatRenderer.from_pretrained(
                sgl_tiny_targets[model], chat_template=rc.TEMPLATES / f"{template}.jinja" if template else None,
                chat_template_kwargs=kwargs, engine=engine)
        return made[key]
    return get


@pytest.fixture(scope="module")
def template_texts(sgl_tiny_targets):
    """The texts the worker ran detect_jinja_template_content_format on, under the same names."""
    texts = {f"panel:{p.stem}": p.read_text() for p in sorted(rc.TEMPLATES.glob("*.jinja"))}
    texts.update({f"own:{f}": (sgl_tiny_targets[f] / "chat_template.jinja").read_text()
                  for f in rc.SGLANG_MODELS})
    texts.update({f"probe:{k}": v for k, v in rc.FORMAT_PROBES.items()})
    return texts


# ------------------------------------------------------------------------------------------------ predictions
def _texts(content) -> list[str]:
    return [p["text"] for p in content if p.get("type") == "text"]


def _media(content) -> list[str]:
    return [R.MEDIA_KINDS[p["type"]] for p in content if p.get("type") in R.MEDIA_KINDS]


def _placeholders(model_path) -> dict:
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    return {k: v for arch in cfg.get("architectures") or [] for k, v in R.placeholders_for(arch).items()}


def _message_divergences(src: dict, fmt: str, placeholders: dict) -> set[str]:
    """The DIVERGENCES entries that apply to one of our messages under SGLang's content format `fmt`."""
    out = set()
    content = src.get("content")
    if fmt == "openai" and isinstance(content, str):
        out.add("openai_string_kept")
    if fmt == "string" and isinstance(content, list):
        texts = _texts(content)
        if " ".join(texts) != "\n".join(t for t in texts if t):
            out.add("string_space_join")
        joined = "\n".join(t for t in texts if t)
        for mod in _media(content):
            ph = R._placeholder_text(placeholders.get(mod), 1)
            if ph and ph not in joined:
                out.add("string_media_dropped")
    if src.get("role") == "assistant" and ("reasoning" in src or "reasoning_content" in src):
        out.add("reasoning_fields")
    return out


@lru_cache(maxsize=None)
def _processor_markers(model: str, model_path) -> dict:
    """The (unexpanded) placeholder SGLang's multimodal processor for the target splits a prompt on."""
    if model == "qwen3_vl":
        return {"image": SGL_IMAGE_TOKEN}
    if model == "qwen2_audio":   # sglang/srt/multimodal/processors/qwen_audio.py:25-28
        return {"audio": "<|audio_bos|><|AUDIO|><|audio_eos|>"}
    if model == "hunyuan_vl":    # <start><image><end> by id (eagle3_plugin/sglang/hunyuan_vl/model.py:569-578)
        from transformers import AutoTokenizer
        cfg = json.loads((Path(model_path) / "config.json").read_text())
        tok = AutoTokenizer.from_pretrained(str(model_path))
        return {"image": "".join(tok.convert_ids_to_tokens([cfg["im_start_id"], cfg["image_token_id"],
                                                            cfg["im_end_id"]]))}
    return {}


def _media_outcome(msgs: list, fmt: str, prompt: str, markers: dict):
    """(PROCESSOR_OUTCOMES entries, media items SGLang loads, the rejection it raises or None)."""
    if fmt != "openai":          # the string format never sends the media
        return set(), 0, None
    wanted = {}
    for m in msgs:
        if isinstance(m.get("content"), list):
            for mod in _media(m["content"]):
                wanted[mod] = wanted.get(mod, 0) + 1
    rules, items, error = set(), 0, None
    for mod, n in wanted.items():
        found = prompt.count(markers[mod])
        if found > n:
            rules.add("placeholder_count_rejected")
            error = {"stage": "engine", "type": "ValueError",
                     "message": f"Prompt has {found} {mod} placeholders but {n} {mod} inputs were provided"}
        elif found < n:
            rules.add("surplus_media_ignored")
        items += min(found, n)
    return rules, items, error


def _expected_sglang_message(src: dict, vllm_msg: dict, rules: set[str]) -> dict:
    """vLLM's message with exactly the predicted differences applied (asserting vLLM's side of each)."""
    want = dict(vllm_msg)
    if "openai_string_kept" in rules:
        assert vllm_msg["content"] == [{"type": "text", "text": src["content"]}]
        want = {k: v for k, v in want.items() if k != "content"} | {"content": src["content"]}   # content last
    if rules & {"string_space_join", "string_media_dropped"}:
        texts = _texts(src["content"])
        joined = "\n".join(t for t in texts if t)
        assert vllm_msg["content"].endswith(joined)                      # vLLM: non-empty texts, "\n"
        if "string_media_dropped" in rules:
            assert vllm_msg["content"] != joined                         # vLLM: placeholders in front
        want["content"] = " ".join(texts) if texts else ""               # SGLang: all texts, " ", no media
    if "reasoning_fields" in rules:
        if src.get("reasoning") is not None:                             # vLLM: reasoning -> both keys
            assert vllm_msg["reasoning"] == vllm_msg["reasoning_content"] == src["reasoning"]
        else:                                                            # vLLM: input reasoning_content dropped
            assert "reasoning" not in vllm_msg and "reasoning_content" not in vllm_msg
        want.pop("reasoning", None)
        want.pop("reasoning_content", None)
        if isinstance(src.get("reasoning_content"), str):
            want["reasoning_content"] = src["reasoning_content"]
    return want


def _has_media(msgs) -> int:
    return sum(len(_media(m["content"])) for m in msgs if isinstance(m.get("content"), list))


# ------------------------------------------------------------------------------------------------ tests
def test_content_format_detection(sgl, template_texts):
    """Our copy answers exactly as SGLang's detect_jinja_template_content_format on every text; vLLM and SGLang
    disagree exactly where FORMAT_DIVERGENCES says (nowhere on the panel or the targets' own templates)."""
    assert set(sgl["detect"]) == set(template_texts)
    disagree = {}
    for name, text in template_texts.items():
        want = sgl["detect"][name]
        assert R.detect_sglang_content_format(text) == want, name
        vllm_fmt = R.detect_content_format(text)
        if vllm_fmt != want:
            disagree[name] = (vllm_fmt, want)
    assert disagree == {k: v[:2] for k, v in FORMAT_DIVERGENCES.items()}


def test_template_manager_setup(sgl, sgl_tiny_targets, renderers):
    """What SGLang's TemplateManager installed per target x --chat-template, and our sglang renderer's view of it."""
    assert len(sgl["envs"]) == len(rc.SGLANG_MODELS) * (1 + len(rc.PANEL))
    for model in rc.SGLANG_MODELS:
        for tpl in [None, *rc.PANEL]:
            env = sgl["envs"][f"{model}-{tpl or 'own'}"]
            assert env["chat_template_name"] is None                       # Jinja, no built-in conversation
            assert not env["auto_adds_specials"] and not env["round_trip_lossy"]
            assert env["is_multimodal"] == (model != "text")
            if tpl:   # template_manager.py:325-332: newlines stripped at the ends, literal \n replaced
                assert env["template_text"] == rc.T(tpl).strip("\n").replace("\\n", "\n")
                assert env["format"] == R.detect_sglang_content_format(rc.T(tpl).strip("\n"))
            else:     # the processor's chat template first, then the tokenizer's (template_manager.py:397-421)
                assert env["template_text"] == (sgl_tiny_targets[model] / "chat_template.jinja").read_text()
            ours = renderers(model, tpl, rc.KWARGS.get(tpl, [{}])[0], "sglang")
            assert ours.content_format == env["format"] and ours.chat_template == env["template_text"]
            # on this panel the format SGLang picks is the one vLLM picks
            assert renderers(model, tpl, rc.KWARGS.get(tpl, [{}])[0], "vllm").content_format == env["format"]


@pytest.mark.parametrize("case", rc.SGLANG_CASES, ids=rc.case_id)
def test_sglang_vs_vllm_rendering(case, sgl, renderers, sgl_tiny_targets):
    """Equal where no DIVERGENCES entry applies; exactly the predicted difference where one does."""
    s = sgl["cases"][rc.case_id(case)]
    fmt = sgl["envs"][f"{case['model']}-{case['template'] or 'own'}"]["format"]
    msgs = rc.case_messages(case)
    ours = renderers(case["model"], case["template"], case["kwargs"], "vllm")
    vllm_conv = ours.engine_messages(msgs)
    placeholders = _placeholders(sgl_tiny_targets[case["model"]])

    # SGLang's own plumbing on these targets: /v1/tokenize == what the scheduler gets (the decode -> processor
    # re-tokenisation of media requests is lossless here), == a plain chat completion for the generation prompt
    outcome, items, error = _media_outcome(msgs, fmt, s["prompt"],
                                           _processor_markers(case["model"], sgl_tiny_targets[case["model"]]))
    if error:
        assert s["error"] == error
    else:
        assert "error" not in s, s.get("error")
        assert s["engine_ids"] == s["tokenize_ids"]
        sent = fmt == "openai" and _has_media(msgs)
        assert s["engine"] == ("text" if sent else "input_ids")           # string format: media never sent
        if sent:
            assert s["mm_items"] == items and s["mm_runs"] == items
        if case["agp"]:
            assert s["chat_engine_ids"] == s["engine_ids"]

    assert len(s["conv"]) == len(vllm_conv) == len(msgs)
    explained = set()
    for src, vm, sm in zip(msgs, vllm_conv, s["conv"]):
        rules = _message_divergences(src, fmt, placeholders)
        explained |= rules
        want = _expected_sglang_message(src, vm, rules)
        assert sm == want, (rules, src)
        if rules:
            assert sm != vm
    if not explained - {"openai_string_kept"}:   # the panel's openai templates take both shapes
        assert s["prompt"] == ours.render(msgs, case["agp"])
        ids = ours.prompt_ids(msgs, case["agp"])
        assert R.first_difference(ids, s["tokenize_ids"], ours.tokenizer) is None


@pytest.mark.parametrize("case", rc.SGLANG_CASES, ids=rc.case_id)
def test_engine_sglang_matches_sglang(case, sgl, renderers):
    """ChatRenderer(engine="sglang") == SGLang, every case: messages, prompt text, /v1/tokenize ids and the ids
    the scheduler gets (where SGLang accepts the request)."""
    s = sgl["cases"][rc.case_id(case)]
    r = renderers(case["model"], case["template"], case["kwargs"], "sglang")
    msgs = rc.case_messages(case)
    assert r.engine_messages(msgs) == s["conv"]
    assert r.render(msgs, case["agp"]) == s["prompt"]
    ids = r.prompt_ids(msgs, case["agp"])
    assert R.first_difference(ids, s["tokenize_ids"], r.tokenizer) is None
    if "error" not in s:
        assert ids == s["engine_ids"]


@pytest.mark.parametrize("case", rc.SGLANG_CFM_CASES, ids=rc.case_id)
def test_engine_sglang_continue_final_message(case, sgl, renderers):
    """SGLang's continue_final_message: a final assistant message with string content (after conversion) is cut
    off and its encoding appended after the generation prompt (serving_chat.py:551-575, :2151-2160)."""
    s = sgl["cfm"][rc.case_id(case)]
    assert "error" not in s, s.get("error")
    r = renderers(case["model"], case["template"], case["kwargs"], "sglang")
    msgs = rc.CONVS[case["conv"]]
    ids = r.prompt_ids(msgs, continue_final_message=True)
    assert R.first_difference(ids, s["engine_ids"], r.tokenizer) is None
    cut = isinstance(r.engine_messages(msgs)[-1]["content"], str)
    assert len(s["conv"]) == len(msgs) - cut      # the template saw the conversation without the cut-off turn


def test_divergence_table_is_used(sgl, sgl_tiny_targets):
    """Every DIVERGENCES / PROCESSOR_OUTCOMES entry covers some case, and every target has cases where SGLang
    equals vLLM message for message and id for id."""
    used, equal = set(), set()
    markers = {m: _processor_markers(m, sgl_tiny_targets[m]) for m in rc.SGLANG_MODELS}
    for c in rc.SGLANG_CASES:
        fmt = sgl["envs"][f"{c['model']}-{c['template'] or 'own'}"]["format"]
        msgs = rc.case_messages(c)
        ph = _placeholders(sgl_tiny_targets[c["model"]])
        rules = set().union(*(_message_divergences(m, fmt, ph) for m in msgs))
        outcome = _media_outcome(msgs, fmt, sgl["cases"][rc.case_id(c)]["prompt"], markers[c["model"]])[0]
        used |= rules | outcome
        if not rules and not outcome:
            equal.add(c["model"])
    assert used == set(DIVERGENCES) | set(PROCESSOR_OUTCOMES)
    assert equal == set(rc.SGLANG_MODELS)
