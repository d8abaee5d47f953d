"""The rendering test conversations, shared by tests/test_render.py (vLLM) and
integration_tests/sglang/test_sglang_rendering.py (SGLang, whose worker process imports this file too).

Plain data and pure functions only: no pytest, no vllm, no torch, no import of our package.
"""
from __future__ import annotations

import copy
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[1] / "eagle3_plugin" / "fixtures" / "templates"
PANEL = sorted(p.stem for p in TEMPLATES.glob("*.jinja") if p.stem != "strict_roles")
VL_PH = "<|vision_start|><|image_pad|><|vision_end|>"


def T(name: str) -> str:
    return (TEMPLATES / f"{name}.jinja").read_text()


def txt(s):
    return {"type": "text", "text": s}


IMG, AUD = {"type": "image"}, {"type": "audio"}

# conversations in our normalised (seed) format: content is a list of parts
TEXT_LIST = [
    {"role": "system", "content": [txt("Be brief.")]},
    {"role": "user", "content": [txt("What is 2+2?"), txt("Answer in words.")]},
    {"role": "assistant", "content": [txt("<think>\nadd them\n</think>\n\nFour.")]},
    {"role": "user", "content": [txt(""), txt("And 3+3?")]},
    {"role": "assistant", "content": [txt("Six.")]},
]
TEXT_STR = [{"role": m["role"], "content": "\n".join(p["text"] for p in m["content"] if p["text"])}
            for m in TEXT_LIST]
NO_SYSTEM = TEXT_STR[1:]


def media_convs(m):
    return {
        f"{m}_list": [
            {"role": "user", "content": [m_part(m), txt("Describe it.")]},
            {"role": "assistant", "content": [txt("A thing.")]},
            {"role": "user", "content": [txt("Now these:"), m_part(m), txt("and"), m_part(m)]},
            {"role": "assistant", "content": [txt("Two more.")]},
        ],
        f"{m}_mixed": [
            {"role": "system", "content": "You see and hear."},
            {"role": "user", "content": [txt("first"), m_part(m)]},
            {"role": "assistant", "content": "ok"},
        ],
    }


def m_part(m):
    return dict(IMG if m == "image" else AUD)


CONVS = {"text_list": TEXT_LIST, "text_str": TEXT_STR, "no_system": NO_SYSTEM,
         **media_convs("image"), **media_convs("audio"),
         # assistant `reasoning` reaches the template as reasoning and reasoning_content
         "reasoning": [{"role": "user", "content": [txt("2+2?")]},
                       {"role": "assistant", "content": [txt("Four.")], "reasoning": "add them"},
                       {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "Six.",
                                                            "reasoning_content": "dropped by vLLM"}],
         # the text already holds vLLM's Qwen3-VL placeholder: vLLM does not add a second one
         "image_inline": [{"role": "user", "content": [txt(f"look {VL_PH} here"), dict(IMG)]},
                          {"role": "assistant", "content": [txt("seen")]}]}

MODELS = {"text": ["text_list", "text_str", "no_system", "reasoning"],
          "qwen3_vl": ["image_list", "image_mixed", "image_inline", "text_list"],
          "qwen2_audio": ["audio_list", "audio_mixed"],
          "hunyuan_vl": ["image_list"]}
KWARGS = {"thinking": [{}, {"enable_thinking": False}, {"enable_thinking": True}]}


def build_cases(models=None, templates_for=None):
    """model x template (None = the target's own) x conversation x template kwargs x add_generation_prompt."""
    cases = []
    for model, convs in (models or MODELS).items():
        templates = (templates_for(model) if templates_for else
                     [None] + (PANEL if model != "hunyuan_vl" else ["string_header", "list_aware"]))
        for tpl in templates:
            for conv in convs:
                for kw in KWARGS.get(tpl, [{}]):
                    for agp in (False, True):   # full conversation / prefix with the generation prompt
                        cases.append({"model": model, "template": tpl, "conv": conv, "kwargs": kw, "agp": agp})
    return cases


CASES = build_cases()

# SGLang: the same conversations over the full grid -- every tiny target x (its own template + every panel
# template) x {list content, plain strings} x {text, the target's media}.
SGLANG_MODELS = {"text": ["text_list", "text_str", "no_system", "reasoning"],
                 "qwen3_vl": ["text_list", "text_str", "image_list", "image_mixed", "image_inline"],
                 "qwen2_audio": ["text_list", "text_str", "audio_list", "audio_mixed"],
                 "hunyuan_vl": ["text_list", "text_str", "image_list", "image_mixed"]}
SGLANG_CASES = build_cases(SGLANG_MODELS, lambda model: [None] + PANEL)

# extra template texts for the content-format detectors (besides the panel and the targets' own templates)
FORMAT_PROBES = {
    "top_level_content": "{% for m in messages %}{% set content = m['content'] %}"
                         "{% for c in content %}{{ c['text'] }}{% endfor %}{% endfor %}",
    "not_jinja": "{% for %}",
    "plain": "{{ messages[0]['content'] }}",
    # string template that merely mentions an image (SGLang's keyword shortcut says "openai")
    "string_mentions_image": "{# no image support #}{% for message in messages %}{{ message['content'] }}"
                             "{% endfor %}",
    # list-aware through an alias / another loop variable name (vLLM tracks it, SGLang does not)
    "alias_loop": "{% for turn in messages %}{% for p in turn['content'] %}{{ p['text'] }}{% endfor %}"
                  "{% endfor %}",
    "msg_loop": "{% for msg in messages %}{% for p in msg.content %}{{ p.text }}{% endfor %}{% endfor %}",
    "macro_plain_words": "{% macro r(parts) %}{% for p in parts %}{{ p.text }}{% endfor %}{% endmacro %}"
                         "{% for message in messages %}{{ r(message.content) }}{% endfor %}",
}


def case_id(c):
    kw = ",".join(f"{k}={v}" for k, v in c["kwargs"].items())
    base = f"{c['model']}-{c['template'] or 'own'}-{c['conv']}-{'gen' if c['agp'] else 'full'}"
    return base + (f"-{kw}" if kw else "")


def case_messages(c):
    msgs = copy.deepcopy(CONVS[c["conv"]])
    return msgs[:-1] if c["agp"] else msgs

# SGLang continue_final_message (chat completions only): the final assistant message is cut off and encoded on
# its own when its content is a string once converted -- these cover string, list+string-format, list+openai.
SGLANG_CFM_CASES = [{"model": m, "template": t, "conv": conv, "kwargs": {}, "agp": False}
                    for m, t, conv in [("text", None, "text_str"), ("text", None, "text_list"),
                                       ("qwen3_vl", None, "text_str"), ("qwen3_vl", None, "text_list"),
                                       ("qwen3_vl", None, "image_mixed"), ("qwen3_vl", "string_header",
                                                                           "image_list")]]
