"""The shipped competent tiny targets (eagle3_plugin/fixtures/targets/{qwen3_vl,hunyuan_vl}-reader, built by
scripts/build_competent_targets.py): their answers are read from the image, on texts and renders they never trained on.

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
READERS = ("qwen3_vl-reader", "hunyuan_vl-reader")


@pytest.fixture(scope="module", params=READERS)
def reader(request):
    from transformers import AutoModelForImageTextToText
    path = fixtures.competent_target(request.param)
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


def test_reading_conversations_hold_out_words_and_renders(tmp_path):
    """The draft benchmark's data (benchmarks/recipes.py --target-variant reader): no held-out text is a training
    text, no word of one appears in the other, and no held-out render + question equals a training one."""
    from PIL import Image

    def rows(split, n=None):
        path = reading.write_conversations(tmp_path, split, n)
        return [json.loads(line) for line in path.read_text().splitlines()]

    def digests(rs):
        out = set()
        for r in rs:
            image, question = r["conversations"][0]["content"]
            out.add(_digest(Image.open(tmp_path / image["image"]).convert("RGB"), question["text"]))
        return out

    train, held = rows("train", 400), rows("heldout")
    assert len(held) == len(reading.eval_texts()) and len(train) == 400
    assert not {r["text"] for r in train} & {r["text"] for r in held}
    words = set(reading.dictionary_words())
    assert not words & set(reading.eval_texts())
    assert 100 < len({r["text"] for r in train} & words) < 300        # about half are English words
    assert not digests(train) & digests(held)
    again = reading.write_conversations(tmp_path, "train", 7)          # written once: never rewritten
    assert len(again.read_text().splitlines()) == 400


def test_the_first_training_renders_are_the_full_set_s(tmp_path):
    """`first=N` writes exactly the first N conversations and renders of the full training set: the training media a
    shipped draft is measured on (integration_tests/test_vllm_reader.py) are the ones it trained on."""
    full = reading.write_conversations(tmp_path / "full", "train", 60)
    part = reading.write_conversations(tmp_path / "part", "train", 60, first=5)
    rows = [json.loads(line) for line in part.read_text().splitlines()]
    assert rows == [json.loads(line) for line in full.read_text().splitlines()][:5]
    for r in rows:
        image = r["conversations"][0]["content"][0]["image"]
        assert (tmp_path / "part" / image).read_bytes() == (tmp_path / "full" / image).read_bytes()
