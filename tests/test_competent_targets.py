"""The shipped competent tiny target (eagle3_plugin/fixtures/targets/qwen3_vl-reader, built by
scripts/build_competent_targets.py): its answers are read from the image, on texts and renders it never trained on.

Held out by construction: evaluation texts come from their own lists and are never produced by the training
generator; no evaluation render (image bytes + question) equals a training render."""
from __future__ import annotations

import hashlib
import json
import random

import pytest
import torch

from eagle3_plugin import fixtures
from eagle3_plugin.devtools import reading

BAR = 0.80          # held-out character accuracy the target must reach


@pytest.fixture(scope="module")
def reader():
    from transformers import AutoModelForImageTextToText
    path = fixtures.competent_target("qwen3_vl-reader")
    return path, AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32).eval()


def _digest(img, question: str) -> str:
    return hashlib.sha256(img.tobytes() + question.encode()).hexdigest()


def test_evaluation_texts_and_renders_are_never_training_ones():
    held = set(reading.eval_texts())
    assert len(held) == len(reading.eval_texts()) >= 80
    rng = random.Random(0)                      # the build's seed: the same stream of training texts
    train = [reading.training_text(rng) for _ in range(20_000)]
    assert not held & set(train)
    eval_rng = random.Random(99)
    eval_renders = {_digest(reading.render(t, eval_rng), q) for t in held for q in reading.QUESTIONS[:1]}
    train_rng = random.Random(0)
    train_renders = {_digest(reading.render(t, train_rng), q) for t in train[:2000] for q in reading.QUESTIONS[:1]}
    assert not eval_renders & train_renders


def test_the_reader_reads_held_out_text(reader):
    path, model = reader
    acc = reading.heldout_accuracy(model, reading.Batcher(path))
    print(f"\nheld-out: exact {acc['exact']:.1%}, characters {acc['char_accuracy']:.1%}; {acc['examples']}")
    assert acc["char_accuracy"] >= BAR, acc
    shipped = json.loads((path / "competent_target.json").read_text())["heldout"]
    assert abs(shipped["char_accuracy"] - acc["char_accuracy"]) < 0.02       # the build's own figure


def test_the_answer_depends_on_the_image(reader):
    """The same question on two different renders gets two different answers, each the text of its image."""
    path, model = reader
    b = reading.Batcher(path)
    rng = random.Random(7)
    texts = ["river", "4096"]
    got = reading.read(model, b, [reading.render(t, rng) for t in texts], [reading.QUESTIONS[0]] * 2)
    assert got[0] != got[1]
    assert all(reading.char_accuracy(t, g) >= 0.6 for t, g in zip(texts, got)), got
