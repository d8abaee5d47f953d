"""Train/serve fidelity: the trainer's prompts against vLLM's own chat rendering (no engine), token by token.
The check passes on good conversations, finds a planted mismatch (the old way of rendering: list content handed
straight to a template that drops non-string content) and names the first differing token, and `train` refuses to
start on such a mismatch before the target is loaded."""
from __future__ import annotations

import os

import pytest

from eagle3_plugin import fixtures
from eagle3_plugin.devtools.tiny import cached_tiny_target
from eagle3_plugin.entry_points.cli import main
from eagle3_plugin.families import FAMILIES
from eagle3_plugin.trainer import fidelity
from eagle3_plugin.trainer.config import TrainConfig
from eagle3_plugin.trainer.data import Tokenizer, read_jsonl
from eagle3_plugin.trainer.render import ChatRenderer

TEMPLATE = fixtures.ROOT / "templates" / "drops_non_string.jinja"


@pytest.fixture(scope="module")
def text_target(tmp_path_factory):
    return cached_tiny_target("text", cache_dir=os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("c"))


def _old_rendering(self, messages, add_generation_prompt=False, **_):
    """What the trainer did before: the seed format's list content given to the template as it is."""
    return self.tokenizer.apply_chat_template(list(messages), chat_template=self.chat_template, tokenize=True,
                                              add_generation_prompt=add_generation_prompt, return_dict=False)


def test_check_passes_on_good_conversations(text_target):
    results = fidelity.check_data(text_target, fixtures.CONVERSATIONS, FAMILIES["text"], 3,
                                  chat_template=str(TEMPLATE))
    assert len(results) >= 3 and all(r.difference is None for r in results), fidelity.report_lines(results)


def test_check_finds_a_planted_mismatch_and_names_the_first_token(text_target, monkeypatch):
    monkeypatch.setattr(ChatRenderer, "prompt_ids", _old_rendering)
    tok = Tokenizer(text_target, FAMILIES["text"], chat_template=str(TEMPLATE))
    convs = [c for c in read_jsonl(fixtures.CONVERSATIONS) if not c.media][:2]
    results = fidelity.check_conversations(tok, text_target, convs, chat_template=str(TEMPLATE))
    assert results and all(r.difference for r in results)
    # the user text vanished: ours continues with <|im_end|> where vLLM has the question's first token
    assert "first difference at token 4 " in results[0].difference, results[0].difference
    assert "<|im_end|>" in results[0].difference


def test_train_refuses_prompts_the_engine_would_not_see(text_target, tmp_path, monkeypatch):
    from eagle3_plugin.trainer.loop import train
    monkeypatch.setattr(ChatRenderer, "prompt_ids", _old_rendering)
    cfg = TrainConfig(target=str(text_target), data=str(fixtures.CONVERSATIONS), output=str(tmp_path / "d"),
                      chat_template=str(TEMPLATE), render_check=2, max_steps=1, progress=False)
    with pytest.raises(fidelity.RenderMismatch) as e:
        train(cfg)
    msg = str(e.value)
    assert "differ from vLLM's" in msg and "DIFFERS: first difference at token" in msg and "--chat-template" in msg
    assert not (tmp_path / "d" / "model.safetensors").exists()


def test_check_command(text_target, capsys):
    assert main(["check", "--target", str(text_target), "--data", str(fixtures.CONVERSATIONS), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "OK (0 of 2 prompts differ from vLLM's)" in out
