"""Train/serve fidelity: do the prompts the trainer builds equal the ones the engine builds for the same messages?

For a few conversations of a data file, every assistant turn's prompt (the messages before it, with the generation
prompt) is rendered by the trainer (render.ChatRenderer, the path training samples take) and by vLLM's own chat
code (render.vllm_render: vLLM's renderer without an engine), and compared token by token. `eagle3-train check
--target T --data D` prints the report; `eagle3-train train` runs it on a few conversations at start-up and refuses
to train on prompts the engine would not see.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from .data import Conversation, Tokenizer, read_jsonl


class RenderMismatch(SystemExit):
    """The trainer's prompts differ from the engine's (one report on the command line)."""


@dataclass
class TurnCheck:
    where: str
    turn: int                    # index of the assistant message
    difference: str | None       # None: identical token ids


def with_media_paths(conv: Conversation) -> list[dict]:
    """The conversation's messages with each media part carrying its file again (for the engine's renderer)."""
    media = iter(conv.media)
    out = []
    for m in conv.messages:
        parts = []
        for p in m["content"]:
            if p["type"] in ("image", "audio"):
                kind, path = next(media)
                parts.append({"type": kind, kind: str(path)})
            else:
                parts.append(dict(p))
        out.append({"role": m["role"], "content": parts})
    return out


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def check_conversations(tok: Tokenizer, target_path, convs: list[Conversation], chat_template=None,
                        chat_template_kwargs=None) -> list[TurnCheck]:
    from .render import first_difference, vllm_prompt_ids
    if chat_template is not None:     # vLLM's request parameter takes the template text (a file is read by the CLI)
        chat_template = tok.renderer.chat_template
    results = []
    for conv in convs:
        messages = with_media_paths(conv)
        for i, m in enumerate(conv.messages):
            if m["role"] != "assistant":
                continue
            ours = tok.renderer.prompt_ids(conv.messages[:i], add_generation_prompt=True)
            theirs = vllm_prompt_ids(str(target_path), messages[:i], chat_template=chat_template,
                                     chat_template_kwargs=chat_template_kwargs, add_generation_prompt=True)
            results.append(TurnCheck(conv.where, i, first_difference(ours, theirs, tok.tokenizer)))
    return results


def report_lines(results: list[TurnCheck]) -> list[str]:
    return [f"{r.where} (assistant message {r.turn}): " + (f"DIFFERS: {r.difference}" if r.difference else "same")
            for r in results]


def check_data(target_path, data, family, n: int, chat_template=None, chat_template_kwargs=None,
               tok: Tokenizer | None = None) -> list[TurnCheck]:
    """Compare the first `n` valid conversations of `data` (bad lines are the loader's business, not this one's)."""
    tok = tok or Tokenizer(target_path, family, chat_template, chat_template_kwargs)
    convs = []
    for conv in read_jsonl(data, errors=[]):
        if conv.media and tok.processor is None:
            continue
        convs.append(conv)
        if len(convs) >= n:
            break
    return check_conversations(tok, target_path, convs, chat_template, chat_template_kwargs)


def require_same_prompts(results: list[TurnCheck], where: str) -> None:
    bad = [r for r in results if r.difference]
    if bad:
        lines = "\n  ".join(report_lines(bad))
        raise RenderMismatch(f"{where}: the trainer's prompts differ from vLLM's for the same messages, so the "
                             f"draft would learn other sequences than the engine serves:\n  {lines}\nFix: pass "
                             f"--chat-template FILE / --chat-template-kwargs JSON exactly as you serve, or report "
                             f"this with the lines above")
