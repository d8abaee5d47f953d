"""The shipped competent tiny targets (eagle3_plugin/fixtures/targets/{qwen3_vl,hunyuan_vl}-reader and
qwen2_audio-listener, built by scripts/build_competent_targets.py): their answers come from the image or the sound, on
texts and media they never trained on.

Held out by construction: evaluation texts come from their own lists and are never produced by the training
generator; no evaluation medium (image or waveform bytes + question) equals a training one."""
from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch

from eagle3_plugin import fixtures
from eagle3_plugin.devtools import listening, reading

BAR = 0.80          # held-out character accuracy the target must reach
TARGETS = {"qwen3_vl-reader": reading.READING, "hunyuan_vl-reader": reading.READING,
           "qwen2_audio-listener": listening.LISTENING}


@pytest.fixture(scope="module", params=list(TARGETS))
def competent(request):
    path, task = fixtures.competent_target(request.param), TARGETS[request.param]
    return path, task, reading.load_model(task, path).eval()


def _digest(item, question: str) -> str:
    data = item.tobytes() if not isinstance(item, np.ndarray) else np.ascontiguousarray(item).tobytes()
    return hashlib.sha256(data + question.encode()).hexdigest()


@pytest.mark.parametrize("task,n_train", [(reading.READING, 2000), (listening.LISTENING, 200)])
def test_evaluation_texts_and_media_are_never_training_ones(task, n_train):
    held = set(reading.eval_texts())
    assert len(held) == len(reading.eval_texts()) >= 80
    rng = random.Random(0)                      # the build's seed: the same stream of training texts
    train = [reading.training_text(rng) for _ in range(20_000)]
    assert not held & set(train)
    eval_rng = random.Random(99)
    eval_media = {_digest(task.make(t, eval_rng), q) for t in held for q in task.questions[:1]}
    train_rng = random.Random(0)
    train_media = {_digest(task.make(t, train_rng), q) for t in train[:n_train] for q in task.questions[:1]}
    assert len(eval_media) == len(held) and not eval_media & train_media


def test_the_target_gets_held_out_answers_from_the_media(competent):
    path, task, model = competent
    acc = reading.heldout_accuracy(model, reading.Batcher(path, task.media), task=task)
    print(f"\nheld-out: exact {acc['exact']:.1%}, characters {acc['char_accuracy']:.1%}; {acc['examples']}")
    assert acc["char_accuracy"] >= BAR, acc
    shipped = json.loads((path / "competent_target.json").read_text())["heldout"]
    assert abs(shipped["char_accuracy"] - acc["char_accuracy"]) < 0.02       # the build's own figure


def test_the_answer_depends_on_the_medium(competent):
    """The same question on two different media gets two different answers, each the text of its medium."""
    path, task, model = competent
    b = reading.Batcher(path, task.media)
    rng = random.Random(7)
    texts = ["river", "4096"]
    got = reading.read(model, b, [task.make(t, rng) for t in texts], [task.questions[0]] * 2)
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


def test_listening_conversations_hold_out_words_and_utterances(tmp_path):
    """The listener's draft data: spoken 16 kHz WAV files beside the jsonl, no held-out text or utterance a training
    one, and `first=N` the full set's first N."""
    import soundfile as sf
    task = listening.LISTENING
    full = reading.write_conversations(tmp_path / "full", "train", 30, task=task)
    part = reading.write_conversations(tmp_path / "part", "train", 30, first=4, task=task)
    held = reading.write_conversations(tmp_path / "full", "heldout", task=task)
    train_rows = [json.loads(line) for line in full.read_text().splitlines()]
    held_rows = [json.loads(line) for line in held.read_text().splitlines()]
    assert [json.loads(line) for line in part.read_text().splitlines()] == train_rows[:4]
    assert len(held_rows) == len(reading.eval_texts())
    assert not {r["text"] for r in train_rows} & {r["text"] for r in held_rows}

    def digests(root, rows):
        out = set()
        for r in rows:
            audio, question = r["conversations"][0]["content"]
            wav, sr = sf.read(str(root / audio["audio"]), dtype="float32")
            assert sr == listening.SAMPLE_RATE and 0.4 < len(wav) / sr < listening.AUDIO_SECONDS
            out.add(_digest(wav, question["text"]))
        return out
    assert not digests(tmp_path / "full", train_rows) & digests(tmp_path / "full", held_rows)
