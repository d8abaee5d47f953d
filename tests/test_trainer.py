"""eagle3-train without engines: data errors, loss masks, media-safe truncation, offline features, exact resume
after kill -9, and `check` on the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eagle3_plugin import fixtures
from eagle3_plugin.families import FAMILIES
from eagle3_plugin.trainer.data import LoadReport, Tokenizer, load_samples, read_jsonl
from eagle3_plugin.devtools.tiny import cached_tiny_target


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def text_target(cache):
    return cached_tiny_target("text", cache_dir=cache)


@pytest.fixture(scope="module")
def vl_target(cache):
    return cached_tiny_target("qwen3_vl", cache_dir=cache)


def test_bad_lines_are_reported_with_file_line_and_fix_and_the_rest_is_kept(tmp_path, vl_target):
    img = tmp_path / "ok.png"
    fixtures.load_image().save(img)
    (tmp_path / "corrupt.png").write_bytes(b"not a png at all")
    good = {"id": "g", "conversations": [{"role": "user", "content": [{"type": "image", "image": "ok.png"},
                                                                      {"type": "text", "text": "read"}]},
                                         {"role": "assistant", "content": "RECEIPT"}]}
    lines = [json.dumps(good),
             '{"id": "x", "conversations": [',                                                    # 2 malformed
             json.dumps({"id": "m", "conversations": [{"role": "user", "content": [
                 {"type": "image", "image": "missing.png"}]}, {"role": "assistant", "content": "a"}]}),  # 3 missing
             json.dumps({"id": "n", "conversations": [{"role": "user", "content": "hi"}]}),      # 4 no assistant
             json.dumps({"id": "c", "conversations": [{"role": "user", "content": [
                 {"type": "image", "image": "corrupt.png"}]}, {"role": "assistant", "content": "a"}]}),  # 5 corrupt
             json.dumps({"id": "r", "conversations": [{"role": "robot", "content": "hi"}]})]     # 6 bad role
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(lines) + "\n")
    report = LoadReport()
    samples = load_samples(data, Tokenizer(vl_target, FAMILIES["qwen3_vl"]), 2048, report, progress=False)
    assert [s.id for s in samples] == ["g"]
    msgs = {e.where.rsplit(":", 1)[1]: str(e) for e in report.errors}
    assert "malformed JSON" in msgs["2"] and "one JSON object per line" in msgs["2"]
    assert "file not found" in msgs["3"] and "missing.png" in msgs["3"] and "relative to the jsonl" in msgs["3"]
    assert "no assistant turn" in msgs["4"] and "regenerate" in msgs["4"]
    assert "cannot decode media" in msgs["5"]
    assert "role must be system, user or assistant" in msgs["6"]
    assert all(str(data) in str(e) for e in report.errors)
    assert report.summary() == "1/6 conversations kept, 5 bad lines skipped"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_loss_mask_is_exactly_the_assistant_turns(family, cache):
    target = cached_tiny_target(family, cache_dir=cache)
    tok = Tokenizer(target, FAMILIES[family])
    want_kind = {"text": "text", "qwen3_vl": "image", "hunyuan_vl": "image", "qwen2_audio": "audio"}[family]
    convs = [c for c in read_jsonl(fixtures.CONVERSATIONS)
             if (want_kind == "text" and not c.media) or any(k == want_kind for k, _ in c.media)][:3]
    assert convs
    for conv in convs:
        (s,) = tok.encode(conv)
        decoded = tok.tokenizer.decode(s.input_ids[s.loss_mask])
        answers = [p["text"] for m in conv.messages if m["role"] == "assistant" for p in m["content"]]
        for a in answers:
            assert a in decoded
        # nothing but the answers and the template's end-of-turn tokens is trained on
        rest = decoded
        for a in answers:
            rest = rest.replace(a, "", 1)
        assert len(tok.tokenizer(rest, add_special_tokens=False)["input_ids"]) <= 3 * len(answers)
        assert not torch.isin(s.input_ids[s.loss_mask], torch.tensor(sorted(tok.placeholder_ids) or [-1])).any()


def test_too_long_sample_is_never_cut_inside_media(tmp_path, vl_target):
    conv = {"id": "long", "conversations": [
        {"role": "user", "content": [{"type": "text", "text": "Look: "}, {"type": "image", "image": "img.png"}]},
        {"role": "assistant", "content": "The image shows a receipt. " * 20}]}
    fixtures.load_image().save(tmp_path / "img.png")
    (tmp_path / "d.jsonl").write_text(json.dumps(conv) + "\n")
    tok = Tokenizer(vl_target, FAMILIES["qwen3_vl"])
    full = load_samples(tmp_path / "d.jsonl", tok, 4096, progress=False)[0]
    media_end = int(torch.isin(full.input_ids, torch.tensor(sorted(tok.placeholder_ids))).nonzero().max())
    rep = LoadReport()
    assert load_samples(tmp_path / "d.jsonl", tok, media_end - 3, rep, progress=False) == []
    assert rep.too_long == 1 and "media up to token" in str(rep.errors[0]) and "--max-length" in str(rep.errors[0])
    rep = LoadReport()
    cut = load_samples(tmp_path / "d.jsonl", tok, media_end + 20, rep, progress=False)[0]
    assert cut.num_tokens == media_end + 20 and rep.truncated == 1
    assert torch.equal(cut.input_ids, full.input_ids[:media_end + 20])


@pytest.mark.parametrize("family", [f for f in FAMILIES if FAMILIES[f].has_engine_modules])
def test_offline_features_reproduce_online_features(tmp_path, cache, family):
    from eagle3_plugin.trainer.features import FeatureStore, dump_features, teacher_rows
    from eagle3_plugin.trainer.target import Target
    target = cached_tiny_target(family, cache_dir=cache)
    tok = Tokenizer(target, FAMILIES[family])
    kind = FAMILIES[family].modality
    samples = [s for c in read_jsonl(fixtures.CONVERSATIONS) if c.media and c.media[0][0] == kind for s in tok.encode(c)][:2]
    ids = [3, 4, 5]
    store = FeatureStore(dump_features(target, samples, tmp_path / "f", ids, progress=False))
    t = Target(target)
    for key, s in zip([r["key"] for r in store.index], samples):
        on = t.features({"input_ids": s.input_ids[None], **s.mm_inputs}, ids)
        off = store.load(key)
        assert torch.equal(on.positions, off.positions)
        assert (on.aux - off.aux).abs().max() <= 0.02 * on.aux.abs().max()          # bf16 storage
        rows = teacher_rows(s.loss_mask)          # the last hidden state is stored where training reads it
        assert rows.any()
        agree = on.logits().argmax(-1)[0, rows] == off.logits().argmax(-1)[0, rows]
        assert agree.float().mean() > 0.97


TRAIN = """
import sys
from eagle3_plugin.trainer.config import TrainConfig
from eagle3_plugin.trainer.loop import train
if __name__ == "__main__":
    train(TrainConfig(target=sys.argv[1], data=sys.argv[2], output=sys.argv[3], max_steps=int(sys.argv[4]),
                      save_every=5, eval_every=1000, progress=False, ttt_steps=3, eval_fraction=0))
"""


def _newest_state(d: Path) -> Path | None:
    states = sorted((d / "train_state").glob("step-????????"))
    return states[-1] if states else None


def _weights(d: Path):
    from safetensors.torch import load_file
    return load_file(str(_newest_state(d) / "draft_fp32.safetensors"))


def test_exact_resume_after_kill_9(tmp_path, text_target):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    data = fixtures.CONVERSATIONS
    steps = 120
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, str(script), str(text_target), str(data), str(ref), str(steps)], check=True,
                   capture_output=True, timeout=600)
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, str(script), str(text_target), str(data), str(run), str(steps)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and p.poll() is None:
        try:
            step = json.loads((_newest_state(run) / "history.json").read_text())["step"]
        except (OSError, ValueError, TypeError):
            step = 0
        if step >= 30:
            p.send_signal(signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.02)
    p.wait()
    assert killed_at is not None and killed_at < steps, "training finished before it could be killed"
    r = subprocess.run([sys.executable, str(script), str(text_target), str(data), str(run), str(steps)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stdout
    a, b = _weights(ref), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed training diverged from the uninterrupted run"
    assert json.loads((_newest_state(run) / "history.json").read_text())["step"] == steps


def test_check_cli_accepts_a_trained_draft_and_rejects_a_broken_one(tmp_path, text_target):
    from safetensors.torch import load_file, save_file
    out = tmp_path / "draft"
    subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "train", "--target", str(text_target),
                    "--data", str(fixtures.CONVERSATIONS), "--output", str(out), "--max-steps", "3",
                    "--no-progress", "--draft-vocab-size", "300"], check=True, capture_output=True, timeout=600)
    ok = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "check", str(out), "--target",
                         str(text_target)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK (0 errors" in ok.stdout, ok.stdout
    sd = load_file(str(out / "model.safetensors"))
    sd.pop("fc.weight")
    save_file(sd, str(out / "model.safetensors"))
    bad = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "check", str(out), "--target",
                          str(text_target)], capture_output=True, text=True)
    assert bad.returncode == 1 and "missing tensor 'fc.weight'" in bad.stdout and "FAILED" in bad.stdout


def test_offline_training_refuses_features_of_another_target(tmp_path, vl_target, text_target):
    from eagle3_plugin.trainer.features import dump_features
    tok = Tokenizer(vl_target, FAMILIES["qwen3_vl"])
    samples = [s for c in read_jsonl(fixtures.CONVERSATIONS) if c.media and c.media[0][0] == "image" for s in tok.encode(c)][:1]
    feats = dump_features(vl_target, samples, tmp_path / "f", [3, 4, 5], progress=False)
    r = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "train", "--target", str(text_target),
                        "--features", str(feats), "--output", str(tmp_path / "o"), "--max-steps", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "dumped from another target" in r.stderr and "family 'qwen3_vl'" in r.stderr
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_offline_features_are_read_ahead_within_a_token_budget(tmp_path, text_target):
    """Offline, stream() queues the next samples' feature reads in a background thread (at most twice the longest
    forward in tokens beyond the current sample); batch() takes those results, which equal direct reads, and a
    bad shard is still skipped and counted."""
    from eagle3_plugin.trainer.config import TrainConfig
    from eagle3_plugin.trainer.features import FeatureStore, dump_features
    from eagle3_plugin.trainer.source import FeatureSource
    target = text_target
    fam = FAMILIES["text"]
    samples = load_samples(fixtures.CONVERSATIONS, Tokenizer(target, fam), 2048, LoadReport(), progress=False)
    feats = dump_features(target, samples, tmp_path / "f", [2, 4, 5], progress=False, shard_bytes=120_000)
    cfg = TrainConfig(target=str(target), features=str(feats), output="", max_length=64, render_check=0,
                      progress=False)
    source = FeatureSource(cfg, fam, json.loads((Path(target) / "config.json").read_text()), torch.device("cpu"),
                           LoadReport(), progress=False)
    direct = FeatureStore(feats)
    items = source.train_items
    assert source.read_ahead_tokens == 128
    seen = []
    for i, (s,) in enumerate(source.stream(items)):
        ahead = [x for x in items[i + 1:] if x.id in source._ahead]
        assert sum(x.num_tokens for x in ahead) <= source.read_ahead_tokens     # the budget holds
        assert s.id in source._ahead                                            # read before it is needed
        got, f = source.batch([s])
        assert torch.equal(f.aux[0, :s.num_tokens], direct.load(s.id).aux[0])
        seen.append(s.id)
    assert seen == [s.id for s in items] and not source._ahead


def test_eval_prompts_count_once_never_overlap_training_and_the_memorisation_gap_is_reported(tmp_path, text_target,
                                                                                               capsys):
    """--eval-data: a prompt that is also in --data, or repeated, is left out (and said so); the run reports the
    acceptance on a probe of training prompts next to the held-out one, and the draft's config records the gap."""
    from eagle3_plugin.trainer.config import TrainConfig
    from eagle3_plugin.trainer.loop import train
    rows = [json.loads(line) for line in fixtures.CONVERSATIONS.read_text().splitlines()]
    text = [r for r in rows if all(isinstance(m["content"], str) or all(p.get("type") == "text" for p in m["content"])
                                   for m in r["conversations"])]

    def reworded(r, i):
        r = json.loads(json.dumps(r))
        r["id"] = f"held-{i}"
        r["conversations"][0]["content"] = [{"type": "text", "text": f"Question {i}: in other words, what is it?"}]
        return r
    held = [text[0], {**text[0], "id": "again"}, reworded(text[1], 1), {**reworded(text[1], 1), "id": "dup"},
            reworded(text[2], 2)]
    data, ev = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in text))
    ev.write_text("".join(json.dumps(r) + "\n" for r in held))
    out = tmp_path / "draft"
    result = train(TrainConfig(target=str(text_target), data=str(data), eval_data=str(ev), output=str(out),
                               max_steps=2, eval_every=2, save_every=2, render_check=0, progress=False,
                               draft_vocab_size=300))
    printed = capsys.readouterr().out
    assert "--eval-data: 3 of 5 conversations left out of the evaluation" in printed
    assert "on training prompts (memorisation gap" in printed
    meta = json.loads((out / "config.json").read_text())["eagle3_plugin"]
    assert result["best_train_sim_al_k3"] >= 1 and result["best_eval_sim_al_k3"] >= 1
    assert meta["memorisation_gap_k3"] == pytest.approx(meta["train_sim_al_k3"] - meta["eval_sim_al_k3"], abs=2e-4)
