"""Offline features (trainer/features.py): runs are never mixed, dumps resume per shard and redo damaged shards,
damaged shards are skipped and counted on read, stored features equal the live target's, int8 storage, the last
hidden state stored only where training reads it (the TTT loss, gradient and statistics of a reloaded sample equal
the dense features' exactly), format 2 folders still read, rank split, and the dump-features subcommand."""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from eagle3_plugin import fixtures
from eagle3_plugin.families import FAMILIES
from eagle3_plugin.trainer import features as F
from eagle3_plugin.trainer.data import DataError, LoadReport, Tokenizer, load_samples
from eagle3_plugin.devtools.tiny import cached_tiny_target

AUX = [2, 4, 5]
SHARD = 120_000         # bytes: about two tiny-target samples per shard, so the tests see several shards


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def target(cache):
    return cached_tiny_target("text", cache_dir=cache)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A copy of the bundled conversations in a folder of its own (the output must not sit in the data's folder)."""
    p = tmp_path_factory.mktemp("data") / "train.jsonl"
    shutil.copy(fixtures.CONVERSATIONS, p)
    return p


@pytest.fixture(scope="module")
def samples(target, data):
    return load_samples(data, Tokenizer(target, FAMILIES["text"]), 2048, LoadReport(), progress=False)[:8]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, target, samples, data):
    """A bf16 dump the read-only tests share."""
    return dump(target, samples, tmp_path_factory.mktemp("ref") / "f", data)


def dump(target, samples, out, data, **kw):
    kw = {"aux_ids": AUX, "data": data, "max_length": 2048, "shard_bytes": SHARD, "progress": False, **kw}
    return F.dump_features(target, samples, out, kw.pop("aux_ids"), **kw)


def mtimes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def shard_files(folder: Path) -> list[Path]:
    return sorted((folder / "shards").glob("*.safetensors"))


def test_rerunning_the_same_dump_resumes_without_recomputing(tmp_path, target, samples, data, monkeypatch):
    out = dump(target, samples, tmp_path / "f", data)
    assert len(shard_files(out)) >= 3
    before = mtimes(out)
    from eagle3_plugin.trainer.target import Target

    def no_target(*a, **k):
        raise AssertionError("a resumed complete dump must not load the target")
    monkeypatch.setattr(Target, "__init__", no_target)
    dump(target, samples, out, data)
    assert mtimes(out) == before
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["done"]) == {"head.safetensors", "tokens.safetensors"} | {s["file"] for s in manifest["shards"]}
    assert not list(out.glob("manifest.rank*.json"))         # folded into manifest.json


@pytest.mark.parametrize("change", ["data", "target", "aux", "storage", "max_length", "samples", "teacher_steps"])
def test_another_run_in_the_folder_is_refused_naming_what_differs(tmp_path, cache, target, samples, data, change,
                                                                  reference):
    out = reference
    before = mtimes(out)
    args = {"target": target, "samples": samples, "data": data}
    kw, field = {}, change
    if change == "data":
        other = tmp_path / "other" / "train.jsonl"
        other.parent.mkdir()
        other.write_text("\n".join(data.read_text().splitlines()[:-1]) + "\n")
        args["data"] = other
    elif change == "target":
        args["target"] = cached_tiny_target("text", cache_dir=cache, seed=1)
    elif change == "aux":
        kw["aux_ids"], field = [3, 4, 5], "aux_layer_ids"
    elif change == "storage":
        kw["storage"] = "int8"
    elif change == "max_length":
        kw["max_length"] = 64
    elif change == "teacher_steps":
        kw["teacher_steps"] = 3
    else:
        args["samples"] = samples[:-1]
    with pytest.raises(SystemExit) as e:
        dump(args["target"], args["samples"], out, args["data"], **kw)
    msg = str(e.value)
    assert str(out) in msg and f"{field}" in msg and "another --output, or --overwrite" in msg
    assert mtimes(out) == before                        # refused before any work
    if change != "samples":                              # the CLI's pre-flight (no samples yet) refuses it too
        with pytest.raises(SystemExit, match=field):
            F.check_output(out, args["target"], kw.get("aux_ids", AUX), data=args["data"],
                           max_length=kw.get("max_length", 2048), storage=kw.get("storage", "bf16"),
                           shard_bytes=SHARD, teacher_steps=kw.get("teacher_steps", F.TEACHER_STEPS))


def test_a_foreign_non_empty_folder_is_refused_even_with_overwrite(tmp_path, target, samples, data):
    out = tmp_path / "f"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(SystemExit, match="not a features folder written by eagle3-train dump-features"):
            dump(target, samples, out, data, overwrite=overwrite)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_overwrite_deletes_only_the_files_that_run_wrote(tmp_path, target, samples, data):
    out = dump(target, samples, tmp_path / "f", data, storage="int8")
    (out / "notes.txt").write_text("mine")
    (out / "shards" / "extra.bin").write_bytes(b"mine too")
    dump(target, samples, out, data, aux_ids=[3, 4, 5], overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "shards" / "extra.bin").read_bytes() == b"mine too"
    store = F.FeatureStore(out)
    assert store.meta["aux_layer_ids"] == [3, 4, 5] and store.meta["storage"] == "bf16"
    assert store.load(store.index[0]["key"]).aux.shape[-1] == 3 * 128


@pytest.mark.parametrize("where", ["target", "inside target", "contains target", "data folder", "inside data"])
def test_output_must_stay_out_of_the_target_and_data_folders(tmp_path, target, samples, data, where):
    out = {"target": target, "inside target": target / "features", "contains target": target.parent,
           "data folder": data.parent, "inside data": data.parent / "features"}[where]
    before = mtimes(target.parent)
    with pytest.raises(SystemExit, match="write the features to a folder of their own"):
        dump(target, samples, out, data)
    assert mtimes(target.parent) == before and not (data.parent / "features").exists()


def test_damaged_shards_are_skipped_and_counted_on_read(tmp_path, target, samples, data, monkeypatch):
    out = dump(target, samples, tmp_path / "f", data)
    shards = shard_files(out)
    truncated, deleted = shards[1], shards[2]
    truncated.write_bytes(truncated.read_bytes()[:-100])
    deleted.unlink()
    store = F.FeatureStore(out)
    errors: list = []
    with monkeypatch.context() as m:        # start-up needs the manifest and tokens.safetensors, no shard
        m.setattr(F, "safe_open", lambda *a, **k: pytest.fail("a shard was opened at start-up"))
        usable = store.samples(errors)
    by_shard = {s["file"]: s["samples"] for s in store.meta["shards"]}
    lost = by_shard["shards/00001.safetensors"] + by_shard["shards/00002.safetensors"]
    assert len(usable) == len(samples) - lost and store.skipped_samples == lost
    assert [e.where for e in errors] == [str(truncated), str(deleted)]
    assert "truncated" in str(errors[0]) and "missing" in str(errors[1])
    assert all(isinstance(e, DataError) and "re-run `eagle3-train dump-features`" in str(e) for e in errors)
    for s in usable:                                                # the rest trains normally
        assert store.load(s.id).aux.shape[1] == s.num_tokens
    key = next(r["key"] for r in store.index if r["shard"] == "shards/00001.safetensors")
    with pytest.raises(DataError, match=f"sample {key}.*truncated.*re-run"):
        store.load(key)
    with pytest.raises(DataError, match="truncated"):              # without an errors list: raise
        F.FeatureStore(out).samples()
    for p in shard_files(out):
        p.unlink()
    with pytest.raises(SystemExit, match="no usable samples"):
        F.FeatureStore(out).samples([])
    (out / "tokens.safetensors").unlink()
    with pytest.raises(SystemExit, match="tokens.safetensors: file is missing.*no sample is usable.*re-run"):
        F.FeatureStore(out).samples([])


def test_a_checksum_mismatch_is_reported_on_read_and_redone_by_a_rerun(tmp_path, target, samples, data):
    out = dump(target, samples, tmp_path / "f", data)
    good = shard_files(out)[0]
    original = good.read_bytes()
    flipped = bytearray(original)
    flipped[-10] ^= 0xFF                        # same size, so only the checksum can tell
    good.write_bytes(bytes(flipped))
    store = F.FeatureStore(out)
    assert len(store.samples([])) == len(samples)                   # cheap checks at start-up pass
    key = store.index[0]["key"]
    with pytest.raises(DataError, match=f"{good}.*sample {key}.*sha256 differs"):
        store.load(key)
    assert store.skipped_samples == store.meta["shards"][0]["samples"]
    before = mtimes(out)
    dump(target, samples, out, data)
    after = mtimes(out)
    changed = {f for f in after if after[f] != before.get(f)}
    assert changed - {"manifest.json"} == {"shards/00000.safetensors"}     # only the bad shard is redone
    assert good.read_bytes() == original                            # (deterministic on the CPU)
    assert F.FeatureStore(out).load(key).aux.shape[1] == samples[0].num_tokens


def test_stored_features_equal_the_live_target_and_int8_stays_within_one_percent(tmp_path, target, samples, data,
                                                                                   reference):
    from eagle3_plugin.trainer.target import Target
    bf16 = F.FeatureStore(reference)
    int8 = F.FeatureStore(dump(target, samples, tmp_path / "int8", data, storage="int8"))
    live = Target(target)
    stored = {s.id: s for s in bf16.samples()}
    for row, s in zip(bf16.index, samples):
        on = live.features({"input_ids": s.input_ids[None], "attention_mask": torch.ones_like(s.input_ids)[None]},
                           AUX)
        off, q = bf16.load(row["key"]), int8.load(row["key"])
        assert torch.equal(stored[row["key"]].input_ids, s.input_ids)
        assert torch.equal(stored[row["key"]].loss_mask, s.loss_mask)
        assert torch.equal(off.positions, on.positions) and torch.equal(q.positions, on.positions)
        rows = F.teacher_rows(s.loss_mask)          # the last hidden state: those rows, zeros elsewhere
        assert 0 < rows.sum() < s.num_tokens
        for name in ("aux", "last_hidden"):
            a, b, c = getattr(on, name), getattr(off, name), getattr(q, name)
            assert a.shape == b.shape == c.shape
            if name == "last_hidden":
                assert not b[0, ~rows].any() and not c[0, ~rows].any()
                a, b, c = a[:, rows], b[:, rows], c[:, rows]
            assert ((a - b).abs() <= a.abs() * 2**-8 + 1e-6).all()          # bf16 rounding
            assert (a - c).norm() / a.norm() < 0.01
    folders = {"bf16": reference, "int8": tmp_path / "int8"}
    size = {k: sum(p.stat().st_size for p in shard_files(d)) + (d / "tokens.safetensors").stat().st_size
            for k, d in folders.items()}
    tokens = sum(s.num_tokens for s in samples)
    share = sum(int(F.teacher_rows(s.loss_mask).sum()) for s in samples) / tokens
    assert bf16.meta["teacher_tokens"] == share * tokens and bf16.meta["teacher_steps"] == F.TEACHER_STEPS
    for k in size:                    # the estimate is the payload; the rest is safetensors headers
        est = tokens * F.bytes_per_token(128, 3, k, teacher_share=share)
        assert est <= size[k] < 1.1 * est


def realistic_hidden_states(t: int = 512, h: int = 1024) -> torch.Tensor:
    """Residual-stream-like [T, 3H]: heavy tails (Student-t, 5 dof), channel scales spread over ~an order of
    magnitude, per-token scales over orders of magnitude, a few outlier channels 20x the rest in every token and
    one token with "massive activations" (1000x the median, as at a BOS token), and an all-zero token."""
    gen = torch.Generator().manual_seed(0)
    chan = torch.exp(torch.randn(3 * h, generator=gen) * 0.5)
    tok = torch.exp(torch.randn(t, 1, generator=gen))
    x = torch.distributions.StudentT(5.0).sample((t, 3 * h)) * chan * tok
    outliers = torch.randperm(3 * h, generator=gen)[:6]
    x[:, outliers] *= 20
    x[0, outliers[:2]] = 1000 * x[0].abs().median()
    x[5] = 0
    return x


def test_int8_round_trip_on_realistic_hidden_states():
    torch.manual_seed(0)
    x = realistic_hidden_states()
    packed = F.quantize_int8(x, F.int8_group(1024))
    q, scale, chan = packed["q"], packed["scale"], packed["chan"]
    assert q.dtype == torch.int8 and scale.dtype == chan.dtype == torch.bfloat16
    assert scale.shape == (512, 3 * 1024 // 128) and chan.shape == (3 * 1024,)
    y = F.dequantize_int8(q, scale, chan)
    per_token = (y - x).norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-30)
    assert (y - x).norm() / x.norm() < 0.01 and per_token.median() < 0.015 and per_token.max() < 0.05
    assert torch.equal(y[5], x[5])                                   # all zero stays exactly zero
    # why not one absmax per token and aux chunk alone: on the same tensor it is several times worse
    g = x.reshape(512, 3, 1024)
    step = g.abs().amax(-1, keepdim=True).clamp_min(1e-30) / 127
    simple = ((g / step).round().clamp(-127, 127) * step).reshape(x.shape)
    assert (simple - x).norm() / x.norm() > 0.02
    assert F.int8_group(100) == 100                               # not a multiple of 128: one scale per chunk


def test_bytes_per_token():
    for h in (128, 4096):
        g = F.int8_group(h)           # teacher share 1 (every token's last hidden state stored): the most it takes
        assert F.bytes_per_token(h) == 8 * h + 4 + 1 + 4          # 3 aux + last hidden in bf16, ids, mask, pos
        assert F.bytes_per_token(h, 3, "bf16", position_rows=3) == 8 * h + 4 + 1 + 12
        assert F.bytes_per_token(h, 3, "int8") == 4 * h + 2 * 4 * h // g + 9
        # the last hidden state only at a share of the tokens (those training reads: about the assistant share)
        assert F.bytes_per_token(h, 3, "int8", teacher_share=0.5) == 3 * h + 2 * 3 * h // g + 9 + 0.5 * (h + 2 * h // g)
        assert F.bytes_per_token_parts(h, 3, "bf16", 3) == (6 * h + 17, 2 * h)


def test_each_rank_dumps_every_world_th_shard_and_the_reader_merges(tmp_path, target, samples, data, monkeypatch):
    assert F.rank_shards(10, 1, 3) == [1, 4, 7] and F.rank_shards(2, 0, 1) == [0, 1]
    out = tmp_path / "f"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")                   # no process group: the two "ranks" run one after the other
    dump(target, samples, out, data)
    n = len(json.loads((out / "manifest.json").read_text())["shards"])
    assert n >= 3 and [p.name for p in shard_files(out)] == [f"{j:05d}.safetensors" for j in range(0, n, 2)]
    errors: list = []
    assert len(F.FeatureStore(out).samples(errors)) < len(samples)
    assert len(errors) == n // 2 and all("not written yet" in str(e) for e in errors)
    monkeypatch.setenv("RANK", "1")
    dump(target, samples, out, data)
    assert len(shard_files(out)) == n
    assert sorted(p.name for p in out.glob("manifest.rank*.json")) == ["manifest.rank0.json", "manifest.rank1.json"]
    store = F.FeatureStore(out)                       # merges the per-rank records
    assert [s.id for s in store.samples()] == [r["key"] for r in store.index]
    before = {f: t for f, t in mtimes(out).items() if f.startswith("shards/")}
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    dump(target, samples, out, data)                  # one process resumes it: folds the records, recomputes nothing
    assert {f: t for f, t in mtimes(out).items() if f.startswith("shards/")} == before
    assert not list(out.glob("manifest.rank*.json")) and len(F.FeatureStore(out).samples()) == len(samples)


def test_dump_features_subcommand(tmp_path, target, data, capsys, monkeypatch):
    parser = argparse.ArgumentParser()
    F.configure_parser(parser.add_subparsers())
    argv = ["dump-features", "--target", str(target), "--data", str(data), "-o", str(tmp_path / "f"),
            "--device", "cpu", "--storage", "int8", "--aux-layer-ids", "2", "4", "5"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "warning:" in printed and "bad lines skipped" in printed                  # image/audio lines
    assert "int8: " in printed and "bytes/token = 399 + 130 x teacher share" in printed
    assert "x the anchors' 3 aux + last hidden in bf16 at every token, 1024 bytes/token" in printed
    store = F.FeatureStore(tmp_path / "f")
    assert store.meta["storage"] == "int8" and store.meta["data"]["path"] == str(data.resolve())
    # another run is refused before the (slow) tokenising
    monkeypatch.setattr(F, "stream_samples", lambda *a, **k: pytest.fail("tokenised before refusing"))
    args = parser.parse_args(argv[:-3] + ["3", "4", "5"])
    with pytest.raises(SystemExit, match="aux_layer_ids: the folder has \\[2, 4, 5\\], this run \\[3, 4, 5\\]"):
        args.func(args)


def test_the_subcommand_streams_media_one_shard_at_a_time(tmp_path, cache, monkeypatch):
    """dump-features holds only tokens and loss masks for the whole data set; a shard's pixel values are processed
    when that shard is dumped, and the stored features equal a dump of fully loaded samples."""
    vl = cached_tiny_target("qwen3_vl", cache_dir=cache)
    fam = FAMILIES["qwen3_vl"]
    calls = []
    real = F.stream_samples

    def watched(*a, **k):
        samples, media = real(*a, **k)
        assert samples and not any(s.mm_inputs for s in samples)

        def counted(shard):
            got = media(shard)
            calls.append((len(shard), sum(bool(s.mm_inputs) for s in got)))
            return got
        return samples, counted
    monkeypatch.setattr(F, "stream_samples", watched)
    parser = argparse.ArgumentParser()
    F.configure_parser(parser.add_subparsers())
    args = parser.parse_args(["dump-features", "--target", str(vl), "--data", str(fixtures.CONVERSATIONS), "-o",
                              str(tmp_path / "streamed"), "--device", "cpu", "--data-workers", "0"])
    assert args.func(args) == 0
    streamed = F.FeatureStore(tmp_path / "streamed")
    n = len(streamed.index)
    assert sum(k for k, _ in calls) == n and sum(m for _, m in calls) >= 2      # image samples got their pixels
    eager = load_samples(fixtures.CONVERSATIONS, Tokenizer(vl, fam), 2048, LoadReport(), progress=False)
    assert len(eager) == n and any(s.mm_inputs for s in eager)
    aux = list(fam.aux_layer_ids(json.loads((Path(vl) / "config.json").read_text())))
    ref = F.FeatureStore(F.dump_features(vl, eager, tmp_path / "eager", aux, data=fixtures.CONVERSATIONS,
                                         max_length=2048, progress=False))
    assert streamed.meta["samples_sha256"] == ref.meta["samples_sha256"]
    for row in ref.index:
        a, b = streamed.load(row["key"]), ref.load(row["key"])
        assert torch.equal(a.aux, b.aux) and torch.equal(a.positions, b.positions)


# ------------------------------------------------------------------------------------------ sparse teacher rows
def favouring_draft(target_cfg, embed, head=None, favourite: int | None = None, seed: int = 0):
    """A fresh draft; `favourite`: its logits pushed towards that target id, so that its chains of consecutive
    correct tokens run long wherever the target's argmax is that token (the statistics read far ahead)."""
    from eagle3_plugin.trainer.draft import init_draft
    draft = init_draft(target_cfg, embed.float(), None if head is None else head.float(), seed=seed).float()
    if favourite is not None:
        push = torch.zeros(draft.draft_ids.numel())
        push[int((draft.draft_ids == favourite).nonzero())] = 30.0
        plain = draft.logits
        draft.logits = lambda prenorm: plain(prenorm) + push
    return draft


def ttt_result(draft, input_ids, loss_mask, aux, last_hidden, positions, head, steps: int = 7):
    """(loss, StepStats, gradients) of one conversation's TTT step, from its [T, .] features."""
    from eagle3_plugin.trainer.ttt import target_distribution, ttt_forward
    draft.zero_grad(set_to_none=True)
    p, arg = target_distribution(last_hidden.reshape(1, *last_hidden.shape[-2:]), head, draft.draft_ids)
    loss, stats = ttt_forward(draft, input_ids[None], aux.reshape(1, *aux.shape[-2:]), p, arg, positions,
                              loss_mask[None], steps, 0.8)
    loss.backward()
    return float(loss.detach()), stats, {n: w.grad.clone() for n, w in draft.named_parameters() if w.grad is not None}


def assert_same(a, b):
    assert a[0] == b[0] and a[1] == b[1], (a[:2], b[:2])          # loss and every StepStats field, exactly
    assert a[2].keys() == b[2].keys() and all(torch.equal(a[2][k], b[2][k]) for k in a[2])


def test_teacher_rows_hold_every_last_hidden_row_ttt_reads(target):
    """ttt_forward, fed synthetic features whose target argmax is mostly one token the draft favours (so chains
    of correct tokens run across the ends of assistant turns): zeroing the rows teacher_rows leaves out changes
    nothing — loss, gradient, StepStats; without the widening by steps - 1 the statistics change, and dropping a
    row before an assistant token changes the loss."""
    from eagle3_plugin.models import model_config
    cfg = model_config(target)
    torch.manual_seed(0)
    T, H, V, x = 64, int(cfg["hidden_size"]), int(cfg["vocab_size"]), 7
    ids = torch.randint(3, V, (T,))
    mask = torch.zeros(T, dtype=torch.bool)
    mask[10:22] = mask[34:45] = mask[58:] = True              # three assistant turns, two ending mid-sequence
    u = torch.nn.functional.normalize(torch.randn(H), dim=0)
    head = torch.randn(V, H) * 0.01
    head[x] += u
    last = torch.randn(T, H) * 0.1 + 5 * u
    last[::9] = torch.randn(T // 9 + 1, H)                   # some rows with another argmax
    aux, pos = torch.randn(T, 3 * H), torch.arange(T)[None]
    draft = favouring_draft(cfg, torch.randn(V, H) * 0.02, favourite=x)
    dense = ttt_result(draft, ids, mask, aux, last, pos, head)
    assert dense[1].accept_sum[-1] > 3 * dense[1].tokens       # long chains: the statistics do read far ahead

    def without(rows):
        return ttt_result(draft, ids, mask, aux, torch.where(rows[:, None], last, 0.0), pos, head)

    rows = F.teacher_rows(mask)
    assert rows.sum() < T and torch.equal(F.teacher_rows(mask, 1), torch.cat([mask[1:], mask[:1] & False]))
    assert_same(without(rows), dense)
    narrow = without(F.teacher_rows(mask, 1))                 # only before assistant tokens: the loss needs no more
    assert narrow[0] == dense[0] and all(torch.equal(narrow[2][k], dense[2][k]) for k in dense[2])
    assert narrow[1].accept_sum != dense[1].accept_sum        # but the chains past a turn's end read more
    fewer = F.teacher_rows(mask, 1).clone()
    fewer[20] = False                                         # the teacher of assistant token 21
    assert without(fewer)[0] != dense[0]


@pytest.mark.parametrize("storage", ["bf16", "int8"])
def test_a_reloaded_sparse_sample_trains_exactly_like_the_dense_features(tmp_path, target, samples, data, storage):
    """The stored last hidden rows, scattered back with zeros elsewhere: the TTT loss, gradient and StepStats equal
    those of the dense features exactly (the rows left out are never read). A conversation without assistant
    tokens stores no row at all and still loads."""
    from dataclasses import replace
    from eagle3_plugin.models import model_config
    from eagle3_plugin.trainer.target import Target
    quiet = replace(samples[4], id="no-assistant", loss_mask=torch.zeros_like(samples[4].loss_mask))
    some = samples[:4] + [quiet]
    store = F.FeatureStore(dump(target, some, tmp_path / storage, data, storage=storage))
    live, cfg = Target(target), model_config(target)
    stored = {s.id: s for s in store.samples()}
    checked = 0
    for row, s in zip(store.index, some):
        on = live.features({"input_ids": s.input_ids[None], "attention_mask": torch.ones_like(s.input_ids)[None]},
                           AUX)
        off = store.load(row["key"])
        assert torch.equal(stored[row["key"]].loss_mask, s.loss_mask) and stored[row["key"]].input_ids.dtype == torch.int64
        assert off.positions.dtype == torch.int64 and torch.equal(off.positions, on.positions)
        rows = F.teacher_rows(s.loss_mask)
        assert off.last_hidden.shape == on.last_hidden.shape and not off.last_hidden[0, ~rows].any()
        if s is quiet:
            assert not rows.any() and not off.last_hidden.any()
            continue
        # the dense features: bf16 -> every row rounded as stored; int8 -> the stored rows, the live ones elsewhere
        if storage == "bf16":
            dense = on.last_hidden.to(torch.bfloat16).float()
            assert torch.equal(off.aux, on.aux.to(torch.bfloat16).float())
            assert torch.equal(off.last_hidden[0, rows], dense[0, rows])
        else:
            dense = on.last_hidden.clone()
            dense[0, rows] = off.last_hidden[0, rows]
        assert dense[0, ~rows].abs().sum() > 0                    # the reference really differs there
        arg = (dense[0].float() @ store.lm_head_weight().float().T).argmax(-1)
        draft = favouring_draft(cfg, store.embed_weight(), store.lm_head_weight(),
                                favourite=int(arg[rows].mode().values))
        sparse = ttt_result(draft, s.input_ids, s.loss_mask, off.aux, off.last_hidden, off.positions, off.head)
        full = ttt_result(draft, s.input_ids, s.loss_mask, off.aux, dense, off.positions, off.head)
        assert sparse[1].tokens > 0
        assert_same(sparse, full)
        checked += 1
    assert checked == 4


def as_format_2(folder: Path, target, samples) -> None:
    """Rewrite a bf16 format-3 dump the way format 2 stored it: dense last_hidden (the live target's), int64 ids and
    positions, no teacher fields; the manifest's records follow the new files."""
    from safetensors.torch import load_file, save_file
    from eagle3_plugin.trainer.target import Target
    live = Target(target)
    m = json.loads((folder / "manifest.json").read_text())
    by_key = {r["key"]: s for r, s in zip(m["samples"], samples)}
    for rel in [s["file"] for s in m["shards"]] + ["tokens.safetensors"]:
        t = load_file(str(folder / rel))
        for name in list(t):
            key, what = name.split(".", 1) if "." in name else (None, name)
            if what in ("positions", "input_ids"):
                t[name] = t[name].to(torch.int64)
            elif what == "last_hidden":
                s = by_key[key]
                t[name] = live.features({"input_ids": s.input_ids[None],
                                         "attention_mask": torch.ones_like(s.input_ids)[None]},
                                        AUX).last_hidden[0].to(torch.bfloat16)
        save_file(t, str(folder / rel))
        m["done"][rel].update(bytes=(folder / rel).stat().st_size, sha256=F._sha256(folder / rel))
    m["format"] = 2
    m.pop("teacher_steps"), m.pop("teacher_tokens")
    (folder / "manifest.json").write_text(json.dumps(m))


def test_format_2_folders_are_still_read_and_a_dump_refuses_to_resume_one(tmp_path, target, samples, data):
    from eagle3_plugin.trainer.target import Target
    out = dump(target, samples[:3], tmp_path / "f", data)
    as_format_2(out, target, samples[:3])
    store = F.FeatureStore(out)
    assert store.teacher_steps is None
    live = Target(target)
    for row, s in zip(store.index, store.samples()):
        on = live.features({"input_ids": s.input_ids[None], "attention_mask": torch.ones_like(s.input_ids)[None]},
                           AUX)
        got = store.load(row["key"])
        assert s.input_ids.dtype == got.positions.dtype == torch.int64
        assert torch.equal(got.last_hidden, on.last_hidden.to(torch.bfloat16).float())     # dense, every row
    with pytest.raises(SystemExit, match="format: the folder has 2, this version writes 3.*--overwrite"):
        dump(target, samples[:3], out, data)
    dump(target, samples[:3], out, data, overwrite=True)
    assert F.FeatureStore(out).meta["format"] == F.FORMAT == 3
    m = json.loads((out / "manifest.json").read_text())
    m["format"] = 1
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SystemExit, match="format 2 or 3 .*holds format 1.*--overwrite"):
        F.FeatureStore(out)
