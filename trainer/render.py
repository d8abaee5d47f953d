"""Render training conversations exactly as vLLM 0.32's OpenAI chat path renders them for the same target.

The draft learns from whatever text we render; any difference from what the serving engine feeds the target is
silent acceptance loss. vLLM does NOT hand our list-of-parts messages to the template as they are. What it does
(paths under vllm/, full notes with more detail in /work/notes/vllm_chat_rendering.md):

* Template: explicit ``--chat-template`` / ``chat_template=`` > the AutoProcessor's ``chat_template`` (only when
  the processor is a ProcessorMixin and no tools are sent) > ``tokenizer.get_chat_template()`` > vLLM's built-in
  fallbacks (renderers/hf.py:265-322 ``resolve_chat_template``). Server/LLM() templates go through
  ``load_chat_template`` (renderers/chat_utils.py:1492: a readable file path, else the literal text).
* Content format: ``--chat-template-content-format auto`` parses the template's jinja AST and answers "openai" iff
  some ``for`` loop iterates a message's ``content`` (directly, via an assigned alias, via a macro parameter, or a
  top-level ``for x in content``), else "string"; an unparsable template counts as "string"
  (renderers/hf.py:323-509 ``_detect_content_format``, :587-629).
* Message conversion (renderers/chat_utils.py:2074 ``_parse_chat_message_content``, :1846 ``..._parts``):
  string content becomes one text part, ``None`` becomes no parts.
  - "openai": text parts stay ``{"type": "text", "text": ...}``; media parts become bare ``{"type": "image"}`` /
    ``{"type": "audio"}`` / ``{"type": "video"}`` (:2016-2024).
  - "string": the texts are joined with ``"\\n"`` (:1883; empty texts are dropped, :1867). Media parts add the
    model class's ``get_placeholder_str(modality, i)`` (:685; ``i`` counts items of that modality over the whole
    request, from 1), and those placeholders are PREPENDED to the text, grouped by modality in order of first
    appearance, joined with ``"\\n"`` (:1569-1623) -- unless the text already contains that placeholder string.
    A model whose class returns ``None`` (HunYuanVL via the Transformers backend) gets no placeholder at all.
  - assistant ``reasoning`` is copied to ``reasoning`` and ``reasoning_content`` (:2104-2113); an input
    ``reasoning_content`` key is dropped.
* Rendering: ``tokenizer.apply_chat_template(conversation, chat_template=resolved, tokenize=False,
  add_generation_prompt=..., continue_final_message=..., **chat_template_kwargs, return_dict=False)`` -- always the
  TOKENIZER's apply_chat_template, never the processor's (renderers/hf.py:780-841). ``chat_template_kwargs`` are
  filtered to the template's undeclared variables plus HF's own parameters (:715-744); the request's
  add_generation_prompt/continue_final_message override the same keys in chat_template_kwargs
  (entrypoints/openai/chat_completion/protocol.py:621-650, entrypoints/common/offline.py:183-200).
* Tokenising: the rendered text is encoded with ``tokenizer(text, add_special_tokens=False)`` (renderers/base.py:638,
  request default ``add_special_tokens=False``: chat_completion/protocol.py:337; LLM.chat forces it:
  entrypoints/common/offline.py:208). The HF processor never re-tokenises: the ids go to the multimodal processor
  (renderers/base.py:894-934), which expands each placeholder token from the ids. So no BOS is added on top of the
  template's, and media placeholders are still single tokens in ``prompt_ids``.

``detect_content_format`` calls vLLM's own function when vllm imports, else a small faithful copy of its AST walk.

``ChatRenderer(..., engine="sglang")`` renders as SGLang 0.5.23's OpenAI chat path does instead (a faithful small
copy: SGLang is not importable here; paths under sglang/srt/, checked case by case against SGLang's own code by
integration_tests/sglang/test_sglang_rendering.py):

* Template: ``--chat-template FILE.jinja`` is read, stripped of newlines at both ends and has literal ``\\n``
  replaced by newlines (parser/template_manager.py:325-332; the format is detected on the text before that
  replacement); else the processor's ``chat_template``, else the tokenizer's (template_manager.py:397-421).
  Not copied: SGLang's built-in conversation templates (picked by name or by model path,
  parser/conversation.py:525) and its Python chat templates (GLM-5.3, parser/python_chat_template.py:95).
* Content format: ``detect_jinja_template_content_format`` (parser/jinja_template_utils.py:83-122) -- "openai"
  outright when the template text contains "image", "audio", "video" or "vision" (even in a comment), else only
  for a ``for`` loop over ``message|msg|m`` ``.content`` (no alias or macro tracking); a parse failure is "string".
  There is no ``--chat-template-content-format`` option.
* Messages: the request's pydantic messages, dumped (entrypoints/openai/protocol.py:754-807): a user message keeps
  only role and content; system/assistant keep ``name`` and ``reasoning_content`` (an input ``reasoning`` key is
  not a field and vanishes); None values are dropped and ``content: None`` becomes ``""`` (serving_chat.py:2134-2135).
  ``process_content_for_template_format`` (jinja_template_utils.py:215-341): "openai" keeps text parts as
  ``{"type": "text", "text": t}`` (empty ones too) and turns media into bare ``{"type": "image"|"video"|"audio"}``
  (the content list goes last in the dict); "string" joins ALL text parts with a space ``" "`` (empty ones too) and
  drops media parts without a placeholder and without sending the media at all.
* Rendering: ``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=..., tools=None,
  return_dict=False, **chat_template_kwargs)`` -- kwargs unfiltered (serving_chat.py:2138-2210, :2323); encoded with
  ``tokenizer.encode(text, add_special_tokens=False)`` when ``encode("")`` yields tokens, else plain
  ``encode(text)`` (:456-466, :2186-2196). A request whose media survived (the "openai" format) is decoded back to
  text (:2238-2242) and SGLang's multimodal processor tokenises that text again (managers/tokenizer_manager.py:
  1202); ``prompt_ids`` then returns that re-tokenisation (before placeholder expansion).
* ``add_generation_prompt`` is taken as given, as ``POST /v1/tokenize`` does (protocol.py:1783-1792); a chat
  completion has no such field: it always adds the generation prompt and turns a final assistant message with
  string content into a user message (serving_chat.py:536-548). ``continue_final_message=True`` follows the chat
  completion: a final assistant message whose converted content is a string is cut off, the rest rendered with the
  generation prompt and ``encode(prefix)`` (a leading BOS removed) appended to the ids (:551-575, :2153-2160).
``vllm_render`` runs vLLM's own renderer (no engine: a ModelConfig + HfRenderer, ~15 s per model folder) for a
fidelity check; ``first_difference`` reports where two id lists part.
"""
from __future__ import annotations

import base64
import io
import json
import os
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, Union

from eagle3_plugin.families import FAMILIES

ContentFormat = Literal["string", "openai"]
ENGINES = {"vllm": "vLLM", "sglang": "SGLang"}   # ChatRenderer(engine=...) -> the engine it renders like
Placeholder = Union[str, Callable[[int], "str | None"], None]

MEDIA_KINDS = {"image": "image", "image_url": "image", "image_pil": "image", "input_image": "image",
               "audio": "audio", "audio_url": "audio", "input_audio": "audio",
               "video": "video", "video_url": "video"}
# vLLM's interleave markers (renderers/chat_utils.py:98), used only with interleave_mm_strings=True
_MARKERS = {"image": "<##IMAGE##>", "audio": "<##AUDIO##>", "video": "<##VIDEO##>"}

# What vLLM 0.32's model classes return from get_placeholder_str(modality, i), per target architecture (the family
# table's chat_placeholders). Used when vLLM is not importable; tests check it against vLLM.
KNOWN_PLACEHOLDERS: dict[str, dict[str, str | None]] = {
    arch: dict(fam.chat_placeholders) for fam in FAMILIES.values() for arch in fam.hf_architectures
    if fam.chat_placeholders}


class ChatTemplateError(ValueError):
    """A chat template cannot render a conversation (vLLM would answer such a request with a 400)."""


# ----------------------------------------------------------------------------------------- content format
def detect_content_format(chat_template: str) -> ContentFormat:
    """vLLM's `--chat-template-content-format auto` answer for this template text ("string" or "openai")."""
    hf = _vllm_hf()
    if hf is not None:
        return hf._detect_content_format(chat_template, default="string")
    return _detect_content_format_copy(chat_template)


@lru_cache(maxsize=1)
def _vllm_hf():
    """vllm.renderers.hf when vllm imports (lazily: it pulls in torch and vllm), else None."""
    try:
        import vllm.renderers.hf as hf
    except Exception:  # noqa: BLE001 - vllm absent or broken: use the copies below
        return None
    return hf


def _parse_template(chat_template: str):
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
        return _compile_jinja_template(chat_template).environment.parse(chat_template)
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - vLLM: a template that does not compile counts as "string"
        return None
    try:
        return _jinja_env().parse(chat_template)
    except Exception:  # noqa: BLE001
        return None


@lru_cache(maxsize=1)
def _jinja_env():
    import jinja2.ext
    import jinja2.sandbox

    class _Generation(jinja2.ext.Extension):  # parses {% generation %}...{% endgeneration %} like HF's tracker
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_noop"), [], [], body).set_lineno(lineno)

        def _noop(self, caller):
            return caller()

    return jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                        extensions=[_Generation, jinja2.ext.loopcontrols])


def _detect_content_format_copy(chat_template: str) -> ContentFormat:
    """Copy of vLLM 0.32 renderers/hf.py:323-509 (same AST walk, same answers)."""
    import jinja2.nodes as N
    root = _parse_template(chat_template)
    if root is None:
        return "string"

    def var(n, name):
        return isinstance(n, N.Name) and n.ctx == "load" and n.name == name

    def attr(n, name, key):
        if isinstance(n, N.Getitem):
            return var(n.node, name) and isinstance(n.arg, N.Const) and n.arg.value == key
        return isinstance(n, N.Getattr) and var(n.node, name) and n.attr == key

    def access(n, name, key=None):  # name / name[key], through filters, tests and slices
        if isinstance(n, N.Filter):
            return n.node is not None and access(n.node, name, key)
        if isinstance(n, N.Test) or (isinstance(n, N.Getitem) and isinstance(n.arg, N.Slice)):
            return access(n.node, name, key)
        return attr(n, name, key) if key else var(n, name)

    try:
        names, queue = ["messages"], ["messages"]  # `messages` and every variable assigned from it
        while queue:
            cur = queue.pop(0)
            for a in root.find_all(N.Assign):
                if access(a.node, cur):
                    names.append(a.target.name)
                    if a.target.name != cur:
                        queue.append(a.target.name)
        loops = list(root.find_all(N.For))
        msg_vars = [lp.target.name for lp in loops if any(access(lp.iter, v) for v in names)]
        in_macro: dict[int, set[str]] = {}
        macro_loops: set[int] = set()
        for m in root.find_all(N.Macro):
            params, argnames = set(), {a.name for a in m.args}
            for c in root.find_all(N.Call):
                if isinstance(c.node, N.Name) and c.node.name == m.name:
                    params |= {m.args[i].name for i, a in enumerate(c.args)
                               if i < len(m.args) and any(access(a, v, "content") for v in msg_vars)}
                    params |= {k.key for k in c.kwargs if isinstance(k, N.Keyword) and k.key in argnames
                               and any(access(k.value, v, "content") for v in msg_vars)}
            for lp in m.find_all(N.For):
                macro_loops.add(id(lp))
                if params:
                    in_macro[id(lp)] = params
        for lp in loops:
            it = lp.iter
            if any(access(it, v, "content") for v in msg_vars):
                return "openai"
            if isinstance(it, N.Name) and (it.name in in_macro.get(id(lp), ()) or
                                           (id(lp) not in macro_loops and it.name == "content")):
                return "openai"
    except Exception:  # noqa: BLE001 - vLLM: "default" on an AST it cannot walk
        return "string"
    return "string"


SGLANG_MEDIA_WORDS = ("image", "audio", "video", "vision")   # sglang/srt/parser/jinja_template_utils.py:97


def detect_sglang_content_format(chat_template: str) -> ContentFormat:
    """SGLang 0.5.23's answer for this template text: copy of detect_jinja_template_content_format
    (sglang/srt/parser/jinja_template_utils.py:28-122)."""
    import jinja2.nodes as N
    if any(word in chat_template for word in SGLANG_MEDIA_WORDS):
        return "openai"
    root = _parse_template(chat_template)
    if root is None:
        return "string"

    def var(n, name):
        return isinstance(n, N.Name) and n.ctx == "load" and n.name == name

    def attr(n, name, key):
        if isinstance(n, N.Getitem):
            return var(n.node, name) and isinstance(n.arg, N.Const) and n.arg.value == key
        return isinstance(n, N.Getattr) and var(n.node, name) and n.attr == key

    def access(n, name, key):
        if isinstance(n, N.Filter):
            return n.node is not None and access(n.node, name, key)
        if isinstance(n, N.Test) or (isinstance(n, N.Getitem) and isinstance(n.arg, N.Slice)):
            return access(n.node, name, key)
        return attr(n, name, key)

    try:
        for lp in root.find_all(N.For):
            if any(access(lp.iter, name, "content") for name in ("message", "msg", "m")):
                return "openai"
        return "string"
    except Exception:  # noqa: BLE001 - SGLang: "string" on an AST it cannot walk
        return "string"


# ----------------------------------------------------------------------------------------- placeholders
def placeholders_for(architecture: str) -> dict[str, Placeholder]:
    """The string-format placeholders vLLM's model class for `architecture` inserts, per modality it accepts.

    Asks vLLM's model registry when vllm imports (no engine), else KNOWN_PLACEHOLDERS; {} for text-only models."""
    cls = _vllm_model_cls(architecture)
    if cls is None:
        return dict(KNOWN_PLACEHOLDERS.get(architecture, {}))
    if not getattr(cls, "supports_multimodal", False):
        return {}
    out: dict[str, Placeholder] = {}
    for modality in ("image", "audio", "video"):
        try:
            cls.get_placeholder_str(modality, 1)
        except Exception:  # noqa: BLE001 - the class rejects the modality
            continue
        out[modality] = (lambda m: (lambda i: cls.get_placeholder_str(m, i)))(modality)
    known = KNOWN_PLACEHOLDERS.get(architecture)
    return {m: out[m] for m in known if m in out} if known else out


@lru_cache(maxsize=16)
def _vllm_model_cls(architecture: str):
    try:
        from vllm.model_executor.models.registry import ModelRegistry
        return ModelRegistry._try_load_model_cls(architecture)
    except Exception:  # noqa: BLE001
        return None


def _placeholder_text(ph: Placeholder, i: int) -> str | None:
    if callable(ph):
        return ph(i)
    return ph.replace("{i}", str(i)) if isinstance(ph, str) else None


# ----------------------------------------------------------------------------------------- the renderer
class ChatRenderer:
    """Renders and tokenises conversations the way vLLM 0.32's chat path does for the same target.

    tokenizer: the target's HF tokenizer (vLLM loads it with AutoTokenizer); processor: its AutoProcessor, whose
    chat_template then wins over the tokenizer's, as in vLLM; placeholders: modality -> what the model class inserts
    for the "string" content format (a string, "{i}" replaced by the item's 1-based index in the conversation, a
    callable i -> str, or None for "nothing"); a modality missing from the dict is rejected, as vLLM rejects media
    the model does not take. chat_template: a file path or the template text (like --chat-template);
    chat_template_kwargs: like --default-chat-template-kwargs / the request's chat_template_kwargs;
    content_format: "auto" (detect, vLLM's default) | "string" | "openai" (like --chat-template-content-format);
    interleave_mm_strings: vLLM's --interleave-mm-strings (default off).
    engine: "vllm" (default) or "sglang" -- render as SGLang 0.5.23's chat path does instead (module docstring;
    content_format must then stay "auto" and interleave_mm_strings off: SGLang has neither option).
    """

    encode_kwargs = {"add_special_tokens": False}   # how vLLM encodes a rendered chat prompt

    def __init__(self, tokenizer, processor=None, placeholders: Mapping[str, Placeholder] | None = None,
                 chat_template: str | os.PathLike | None = None, chat_template_kwargs: dict | None = None,
                 content_format: str = "auto", interleave_mm_strings: bool = False, engine: str = "vllm"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine == "sglang" and (content_format != "auto" or interleave_mm_strings):
            raise ValueError("engine='sglang': SGLang has no --chat-template-content-format or "
                             "--interleave-mm-strings; leave content_format='auto' and interleave_mm_strings=False")
        self.engine = engine
        self.tokenizer = tokenizer
        self.processor = processor
        self.placeholders = dict(placeholders or {})
        self.interleave_mm_strings = interleave_mm_strings
        self.chat_template, self.template_source = self._resolve_template(chat_template)
        kwargs = dict(chat_template_kwargs or {})
        if bad := {"chat_template", "tokenize"} & kwargs.keys():   # vLLM rejects these (renderers/hf.py:723)
            raise ValueError(f"chat_template_kwargs may not set {sorted(bad)}; pass chat_template= instead")
        self.chat_template_kwargs = kwargs
        if content_format not in ("auto", "string", "openai"):
            raise ValueError(f"content_format must be auto, string or openai, got {content_format!r}")
        if engine == "sglang":
            self.detected_format: ContentFormat = detect_sglang_content_format(self._format_source)
        else:
            self.detected_format = detect_content_format(self.chat_template)
        self.content_format: ContentFormat = self.detected_format if content_format == "auto" else content_format

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kw) -> "ChatRenderer":
        """Load the tokenizer, the processor (if the folder has a ProcessorMixin one) and the placeholders of the
        config's architecture, as vLLM does for a model folder."""
        import transformers
        tok = transformers.AutoTokenizer.from_pretrained(str(path))
        proc = None
        try:
            p = transformers.AutoProcessor.from_pretrained(str(path))
            if isinstance(p, transformers.ProcessorMixin):
                proc = p
        except Exception:  # noqa: BLE001 - vLLM also falls back to the tokenizer when this fails
            pass
        if "placeholders" not in kw:
            cfg = json.loads((Path(path) / "config.json").read_text())
            kw["placeholders"] = {k: v for arch in cfg.get("architectures") or [] for k, v in
                                  placeholders_for(arch).items()}
        return cls(tok, proc, **kw)

    def _resolve_template(self, chat_template) -> tuple[str, str]:
        if self.engine == "sglang":
            return self._resolve_template_sglang(chat_template)
        if chat_template is not None:
            text, src = str(chat_template), "chat_template= (literal text)"
            p = Path(os.fspath(chat_template))
            try:
                if "\n" not in text and "{" not in text and p.is_file():
                    text, src = p.read_text(), f"--chat-template {p}"
            except OSError:
                pass
            return self.tokenizer.get_chat_template(text), src
        proc_tpl = getattr(self.processor, "chat_template", None) if self.processor is not None else None
        if isinstance(proc_tpl, str):
            return proc_tpl, f"the processor's chat template ({self._name()})"
        try:
            return self.tokenizer.get_chat_template(None), f"the tokenizer's chat template ({self._name()})"
        except Exception as e:  # noqa: BLE001
            raise ChatTemplateError(f"{self._name()} has no chat template ({e}); fix: pass --chat-template FILE "
                                    "(the same file you serve with)") from None

    def _resolve_template_sglang(self, chat_template) -> tuple[str, str]:
        """SGLang's TemplateManager (parser/template_manager.py): --chat-template FILE.jinja is read, stripped of
        newlines at both ends (format detected on that) and gets literal \\n turned into newlines (:325-332);
        literal text here is taken as such a file's contents. Else the processor's chat_template, else the
        tokenizer's; a dict of named templates -> its first (:397-449)."""
        if chat_template is not None:
            text, src = str(chat_template), "chat_template= (literal text, as a --chat-template file's contents)"
            p = Path(os.fspath(chat_template))
            try:
                if "\n" not in text and "{" not in text and p.is_file():
                    if p.suffix != ".jinja":
                        raise ValueError(f"engine='sglang': {p} is not a .jinja file; SGLang reads any other "
                                         "--chat-template file as a JSON conversation template, not copied here")
                    text, src = p.read_text(), f"--chat-template {p}"
            except OSError:
                pass
            text = text.strip("\n")
            self._format_source = text
            return text.replace("\\n", "\n"), src
        proc_tpl = getattr(self.processor, "chat_template", None) if self.processor is not None else None
        tpl, src = proc_tpl, f"the processor's chat template ({self._name()})"
        if not tpl:
            tpl, src = getattr(self.tokenizer, "chat_template", None), f"the tokenizer's chat template ({self._name()})"
        if isinstance(tpl, dict) and tpl:
            tpl = next(iter(tpl.values()))
        if not isinstance(tpl, str) or not tpl:
            raise ChatTemplateError(f"{self._name()} has no chat template; fix: pass --chat-template FILE "
                                    "(the same file you serve with)")
        self._format_source = tpl
        return tpl, src

    def _name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or "the target")

    # -------------------------------------------------------------------------------- messages
    def engine_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict]:
        """Our messages (content: str or a list of text/image/audio parts) converted to exactly what vLLM hands
        the chat template (renderers/chat_utils.py:2074-2150 for the resolved content format); with engine="sglang"
        what SGLang hands it (see _sglang_messages)."""
        if self.engine == "sglang":
            return self._sglang_messages(messages)
        counts: Counter = Counter()   # media items per modality over the whole request, as vLLM's tracker counts
        out = []
        for i, msg in enumerate(messages):
            role = msg.get("role")
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"message {i}: role {role!r} is not supported by ChatRenderer "
                                 "(system, user, assistant)")
            content = msg.get("content")
            if content is None:
                content = []
            elif isinstance(content, str):
                content = [{"type": "text", "text": content}]
            conv: dict[str, Any] = {"role": role, "content": self._convert(content, counts, i)}
            if role == "assistant" and msg.get("reasoning") is not None:
                conv["reasoning"] = conv["reasoning_content"] = msg["reasoning"]
            if isinstance(msg.get("name"), str):
                conv["name"] = msg["name"]
            out.append(conv)
        return out

    def _convert(self, parts, counts: Counter, i: int):
        openai = self.content_format == "openai"
        items: list = []
        storage: dict[str, list[str]] = {}   # modality -> placeholder strings, first-appearance order
        for j, part in enumerate(parts):
            if isinstance(part, str):
                part = {"type": "text", "text": part}
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text":
                text = part.get("text")
                if text is None:   # vLLM skips a text part without text
                    continue
                if openai:
                    items.append({"type": "text", "text": text})
                elif text:         # vLLM's `if parse_res:` drops empty strings
                    items.append(text)
                continue
            modality = MEDIA_KINDS.get(kind)
            if modality is None:
                raise ValueError(f"message {i}: content[{j}] type {kind!r} is not text, image, audio or video")
            if modality not in self.placeholders:
                takes = ", ".join(sorted(self.placeholders)) or "no media"
                raise ValueError(f"message {i}: content[{j}] is {modality} but the target takes {takes} "
                                 "(vLLM rejects such a request)")
            counts[modality] += 1
            if openai:
                items.append({"type": modality})
                continue
            ph = _placeholder_text(self.placeholders[modality], counts[modality])
            if ph:
                storage.setdefault(modality, []).append(ph)
            if self.interleave_mm_strings:
                items.append(_MARKERS[modality])
        if openai:
            return items
        return _join_string_content(items, storage, self.interleave_mm_strings, i)

    def _sglang_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict]:
        """SGLang: ChatCompletionRequest's pydantic messages dumped (protocol.py:754-807: user -> role, content;
        system/assistant -> role, content, name, reasoning_content; other keys vanish), content None -> ""
        (serving_chat.py:2134-2135), then process_content_for_template_format (jinja_template_utils.py:215-341)."""
        openai = self.content_format == "openai"
        out = []
        for i, msg in enumerate(messages):
            role = msg.get("role")
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"message {i}: role {role!r} is not supported by ChatRenderer "
                                 "(system, user, assistant)")
            content = msg.get("content")
            dumped: dict[str, Any] = {"role": role, "content": "" if content is None else content}
            if role != "user":
                for key in ("name", "reasoning_content"):
                    if isinstance(msg.get(key), str):
                        dumped[key] = msg[key]
            if not isinstance(content, list):
                out.append(dumped)
                continue
            parts: list = []
            texts: list[str] = []
            for j, part in enumerate(content):
                if isinstance(part, str):
                    part = {"type": "text", "text": part}
                kind = part.get("type") if isinstance(part, Mapping) else None
                if kind in ("text", "input_text"):
                    if not isinstance(part.get("text"), str):   # the protocol's text part needs a string
                        raise ValueError(f"message {i}: content[{j}] is a text part without text (SGLang "
                                         "rejects such a request)")
                    parts.append({"type": "text", "text": part["text"]})
                    texts.append(part["text"])
                    continue
                modality = MEDIA_KINDS.get(kind)
                if modality is None:
                    raise ValueError(f"message {i}: content[{j}] type {kind!r} is not text, image, audio or video")
                if modality not in self.placeholders:
                    takes = ", ".join(sorted(self.placeholders)) or "no media"
                    raise ValueError(f"message {i}: content[{j}] is {modality} but the target takes {takes} "
                                     "(SGLang rejects such a request)")
                parts.append({"type": modality})
            if openai:
                out.append({**{k: v for k, v in dumped.items() if k != "content"}, "content": parts})
            else:   # "string": texts joined with a space, media dropped (and never sent)
                out.append({**dumped, "content": " ".join(texts) if texts else ""})
        return out

    # -------------------------------------------------------------------------------- rendering
    def _kwargs(self, add_generation_prompt: bool, continue_final_message: bool) -> dict:
        if self.engine == "sglang":   # serving_chat.py:2138-2147, :2323: chat_template_kwargs as they are
            return {**self.chat_template_kwargs, "add_generation_prompt": add_generation_prompt,
                    "return_dict": False}
        user = {k: v for k, v in self.chat_template_kwargs.items() if v is not None and v != "auto"}
        kw = {**user, "add_generation_prompt": add_generation_prompt,
              "continue_final_message": continue_final_message, "return_dict": False}
        return _filter_template_kwargs(self.tokenizer, self.chat_template, kw)

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False, *,
               continue_final_message: bool = False) -> str:
        """The prompt text vLLM (engine="sglang": SGLang) renders for these messages. SGLang with
        continue_final_message: the rendered text followed by the cut-off assistant text (SGLang encodes the two
        separately; prompt_ids has the exact ids)."""
        conv = self.engine_messages(messages)
        if self.engine == "sglang":
            conv, agp, prefix = self._sglang_final_message(conv, add_generation_prompt, continue_final_message)
            try:
                return self._apply(conv, agp, False) + (prefix or "")
            except Exception as e:  # noqa: BLE001
                raise self._template_error(e, messages, conv, agp, False) from e
        try:
            return self._apply(conv, add_generation_prompt, continue_final_message)
        except Exception as e:  # noqa: BLE001 - jinja errors, raise_exception(), TypeErrors from the template
            raise self._template_error(e, messages, conv, add_generation_prompt, continue_final_message) from e

    def _apply(self, conv, add_generation_prompt, continue_final_message) -> str:
        return self.tokenizer.apply_chat_template(
            conv, tools=None, chat_template=self.chat_template, tokenize=False,
            **self._kwargs(add_generation_prompt, continue_final_message))

    def _template_error(self, e, messages, conv, agp, cfm) -> ChatTemplateError:
        reason = _template_reason(e)
        where = ""
        for k in range(1, len(conv) + 1):   # the first prefix that fails the same way names the message
            try:
                self._apply(conv[:k], agp if k == len(conv) else False, cfm if k == len(conv) else False)
            except Exception as e2:  # noqa: BLE001
                if _template_reason(e2) == reason:
                    where = f" at message {k - 1} (role {messages[k - 1].get('role')!r})"
                    break
        return ChatTemplateError(
            f"{self.template_source} cannot render this conversation{where}: {reason}. {ENGINES[self.engine]} "
            f"would reject the same request. Fix: pass --chat-template FILE with the template you serve the target with, or fix/drop "
            f"this conversation")

    def prompt_ids(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False, *,
                   continue_final_message: bool = False) -> list[int]:
        """Token ids of the rendered prompt as vLLM encodes it (add_special_tokens=False), before the multimodal
        processor expands each media placeholder. engine="sglang": the ids SGLang's scheduler gets (for a request
        whose media reach the template, its multimodal processor's re-tokenisation of the decoded prompt), before
        expansion."""
        if self.engine == "sglang":
            return self._sglang_prompt_ids(messages, add_generation_prompt, continue_final_message)
        text = self.render(messages, add_generation_prompt, continue_final_message=continue_final_message)
        return list(self.tokenizer(text, **self.encode_kwargs)["input_ids"])

    @staticmethod
    def _sglang_final_message(conv: list[dict], agp: bool, cfm: bool):
        """SGLang's continue_final_message (chat completions, serving_chat.py:2151-2160, :536-548): the generation
        prompt is added and a final assistant message with string content is cut off as the prefix."""
        if not cfm:
            return conv, agp, None
        if conv and conv[-1].get("role") == "assistant" and isinstance(conv[-1].get("content"), str):
            return conv[:-1], True, conv[-1]["content"]
        return conv, True, None

    def _sglang_prompt_ids(self, messages, add_generation_prompt: bool, continue_final_message: bool) -> list[int]:
        tok = self.tokenizer
        conv = self.engine_messages(messages)
        has_media = any(isinstance(m.get("content"), list) and any(p.get("type") != "text" for p in m["content"])
                        for m in conv)
        conv, agp, prefix = self._sglang_final_message(conv, add_generation_prompt, continue_final_message)
        try:
            text = self._apply(conv, agp, False)
        except Exception as e:  # noqa: BLE001
            raise self._template_error(e, messages, conv, agp, False) from e
        # serving_chat.py:456-466 + :2186-2196: add_special_tokens=False only where encode("") adds tokens
        kw = {"add_special_tokens": False} if len(tok.encode("")) > 0 else {}
        ids = list(tok.encode(text, **kw))
        if prefix:   # _append_assistant_prefix_to_prompt_ids (serving_chat.py:551-575)
            extra = list(tok.encode(prefix))
            if extra and extra[0] == tok.bos_token_id:
                extra = extra[1:]
            ids += extra
        if has_media and self.processor is not None:
            # a request with media goes to the multimodal processor as TEXT (serving_chat.py:2238-2242, :1221-1250):
            # the ids decoded and tokenised again (managers/tokenizer_manager.py:1202)
            ids = list(tok(tok.decode(ids, clean_up_tokenization_spaces=False))["input_ids"])
        return ids


def _join_string_content(items: list[str], storage: dict[str, list[str]], interleave: bool, i: int) -> str:
    """renderers/chat_utils.py:1551-1623 (_get_interleaved_text_prompt + _get_full_multimodal_text_prompt)."""
    if not storage:
        return "\n".join(items)
    counts = Counter(v for lst in storage.values() for v in lst)
    if interleave:
        slots = {_MARKERS[m]: list(v) for m, v in storage.items()}
        for k, elem in enumerate(items):
            if elem in slots:
                if not slots[elem]:
                    raise ValueError(f"message {i}: more {elem} placeholders in the text than media items")
                items[k] = slots[elem].pop(0)
    text = "\n".join(items)
    missing: list[str] = []
    for ph, n in counts.items():
        n -= text.count(ph)   # a placeholder the text already holds is not added again
        if n < 0:
            raise ValueError(f"message {i}: the text holds more {ph!r} than media items")
        missing += [ph] * n
    return "\n".join(missing + [text]) if text else "\n".join(missing)


def _filter_template_kwargs(tokenizer, chat_template: str, kw: dict) -> dict:
    """vLLM's resolve_chat_template_kwargs (renderers/hf.py:715): keep what the template reads or HF accepts."""
    hf = _vllm_hf()
    if hf is not None:
        return hf.resolve_chat_template_kwargs(tokenizer, chat_template, kw)
    import inspect

    import jinja2.meta
    try:
        template_vars = jinja2.meta.find_undeclared_variables(_jinja_env().parse(chat_template))
    except Exception:  # noqa: BLE001
        template_vars = set()
    sig = inspect.signature(type(tokenizer).apply_chat_template).parameters
    hf = {n for n, p in sig.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return {k: v for k, v in kw.items() if k in (template_vars | hf) - {"chat_template", "tokenize"}}


def _template_reason(e: BaseException) -> str:
    import jinja2
    seen, cur = set(), e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, jinja2.TemplateError):
            return f"{type(cur).__name__}: {cur}"
        cur = cur.__cause__ or cur.__context__
    return f"{type(e).__name__}: {e}"


# ----------------------------------------------------------------------------------------- fidelity helpers
def first_difference(a_ids: Sequence[int], b_ids: Sequence[int], tokenizer=None, context: int = 3) -> str | None:
    """None when equal, else one line: the first index where the lists differ, with the tokens around it."""
    a, b = list(a_ids), list(b_ids)
    if a == b:
        return None
    n = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    def show(ids, lo, hi):
        seg = ids[lo:hi]
        if tokenizer is None:
            return str(seg)
        return repr(tokenizer.decode(seg, skip_special_tokens=False)) + f" {seg}"

    lo = max(0, n - context)
    return (f"first difference at token {n} (lengths {len(a)} vs {len(b)}): "
            f"common ...{show(a, lo, n)} | a: {show(a, n, n + context)} | b: {show(b, n, n + context)}")


def _dummy_media(modality: str, ref=None) -> dict:
    """An OpenAI content part vLLM accepts; the pre-expansion prompt does not depend on the media itself."""
    if modality == "image":
        from PIL import Image
        img = ref if hasattr(ref, "size") else (Image.open(ref).convert("RGB") if ref else
                                                 Image.new("RGB", (64, 64), (128, 128, 128)))
        return {"type": "image_pil", "image_pil": img}
    if modality == "audio":
        if isinstance(ref, (str, os.PathLike)) and str(ref).endswith(".wav"):
            data = Path(ref).read_bytes()
        else:
            import numpy as np
            import soundfile as sf
            buf = io.BytesIO()
            sf.write(buf, np.zeros(1600, dtype=np.float32), 16000, format="WAV")
            data = buf.getvalue()
        return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}
    raise ValueError(f"vllm_render: no dummy {modality}")


def to_openai_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Our normalised messages as an OpenAI chat request vLLM accepts (media become small dummy items unless the
    part carries a path/PIL image under its modality key)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for p in content:
                mod = MEDIA_KINDS.get(p.get("type")) if isinstance(p, Mapping) else None
                if mod in ("image", "audio"):
                    parts.append(_dummy_media(mod, p.get(mod)))
                else:
                    parts.append(dict(p) if isinstance(p, Mapping) else p)
            content = parts
        out.append({**{k: v for k, v in m.items() if k != "content"}, "content": content})
    return out


@lru_cache(maxsize=4)
def _vllm_renderer(model_path: str):
    from vllm.config import ModelConfig, VllmConfig
    from vllm.renderers import renderer_from_config
    mc = ModelConfig(model=model_path, tokenizer=model_path, enforce_eager=True)
    return renderer_from_config(VllmConfig(model_config=mc))


def vllm_render(model_path: str | os.PathLike, messages: Sequence[Mapping[str, Any]], *,
                chat_template: str | None = None, chat_template_kwargs: dict | None = None,
                add_generation_prompt: bool = False, continue_final_message: bool = False,
                content_format: str = "auto") -> dict:
    """vLLM's own rendering of `messages` for a model folder, without an engine: its HfRenderer's render_messages +
    tokenize_prompts with an online request's settings. Returns {"conversation", "prompt", "prompt_token_ids"}
    (ids before media expansion). Needs vllm; the first call per folder builds a ModelConfig (~15 s)."""
    from vllm.renderers.params import ChatParams
    r = _vllm_renderer(str(model_path))
    params = ChatParams(chat_template=chat_template, chat_template_content_format=content_format,
                        chat_template_kwargs={**{k: v for k, v in (chat_template_kwargs or {}).items()
                                                 if v is not None and v != "auto"},
                                              "add_generation_prompt": add_generation_prompt,
                                              "continue_final_message": continue_final_message,
                                              "tokenize": False})
    conv, prompt = r.render_messages(to_openai_messages(messages), params)
    tok_params = r.default_chat_tok_params.with_kwargs(add_special_tokens=False)
    (tp,) = r.tokenize_prompts([prompt], tok_params)
    return {"conversation": [{k: v for k, v in m.items()} for m in conv], "prompt": prompt["prompt"],
            "prompt_token_ids": list(tp["prompt_token_ids"])}


def vllm_prompt_ids(model_path: str | os.PathLike, messages: Sequence[Mapping[str, Any]], **kw) -> list[int]:
    """Just the ids of vllm_render (same arguments)."""
    return vllm_render(model_path, messages, **kw)["prompt_token_ids"]
