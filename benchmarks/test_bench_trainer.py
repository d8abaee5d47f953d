"""Hot paths of eagle3-train, timed with pytest-benchmark on the tiny targets: data loading (chat template, media
expansion, loss mask), feature dumping, one online and one offline training step, and the peak memory of one step
at 1k / 4k / 16k tokens (which must grow about linearly)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eagle3_plugin import fixtures
from eagle3_plugin.families import FAMILIES
from eagle3_plugin.trainer.data import Tokenizer, load_samples, read_jsonl
from eagle3_plugin.devtools.tiny import cached_tiny_target

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def vl(cache):
    target = cached_tiny_target("qwen3_vl", cache_dir=cache)
    tok = Tokenizer(target, FAMILIES["qwen3_vl"])
    samples = [s for c in read_jsonl(fixtures.CONVERSATIONS) if any(k == "image" for k, _ in c.media) for s in tok.encode(c)]
    return target, tok, samples


def _media_jsonl(tmp_path) -> Path:
    rows = [l for l in fixtures.CONVERSATIONS.read_text().splitlines() if '"image"' in l]
    lines = []
    for l in rows:   # fixture media paths are relative to the fixtures folder
        row = json.loads(l)
        for m in row["conversations"]:
            for p in m["content"] if isinstance(m["content"], list) else ():
                if p["type"] == "image":
                    p["image"] = str(fixtures.ROOT / p["image"])
        lines.append(json.dumps(row))
    path = tmp_path / "media.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_data_loading_with_media(run, vl, tmp_path):
    target, tok, _ = vl
    data = _media_jsonl(tmp_path)
    samples = run(load_samples, data, tok, 2048, progress=False)
    assert samples and all(s.loss_mask.any() for s in samples)


def _one_step(draft, updater, sample, source, cfg):
    from eagle3_plugin.trainer.evaluate import batch_loss
    loss, _ = batch_loss(draft, *source.batch([sample]), cfg)
    updater.backward(loss, 1)
    return updater.step()


def _setup(target, cfg_kw):
    from eagle3_plugin.trainer.config import TrainConfig
    from eagle3_plugin.trainer.data import LoadReport
    from eagle3_plugin.trainer.dist import Dist, Updater
    from eagle3_plugin.trainer.draft import init_draft
    from eagle3_plugin.trainer.source import FeatureSource
    cfg = TrainConfig(target=str(target), output="unused", **cfg_kw)
    tcfg = json.loads((Path(target) / "config.json").read_text())
    source = FeatureSource(cfg, FAMILIES["qwen3_vl"], tcfg, torch.device("cpu"), LoadReport(), progress=False)
    embed, head = source.embed_and_head()
    draft = init_draft(tcfg, embed, head, aux_layer_ids=tuple(source.aux_ids))
    return cfg, source, draft, Updater(draft, 1e-3, 0.5, 1, Dist())


def test_train_step_online(run, vl, tmp_path):
    target, _, _ = vl
    cfg, source, draft, updater = _setup(target, {"data": str(_media_jsonl(tmp_path))})
    gnorm = run(_one_step, draft, updater, source.samples(source.train_items[:1])[0], source, cfg)
    assert gnorm > 0


@pytest.fixture(scope="module")
def dumped(vl, tmp_path_factory):
    from eagle3_plugin.trainer.features import dump_features
    target, _, samples = vl
    tcfg = json.loads((Path(target) / "config.json").read_text())
    return dump_features(target, samples, tmp_path_factory.mktemp("f") / "features",
                         FAMILIES["qwen3_vl"].default_aux_layer_ids(tcfg), progress=False)


def test_feature_dumping(run, vl, tmp_path):
    from eagle3_plugin.trainer.features import dump_features
    target, _, samples = vl
    tcfg = json.loads((Path(target) / "config.json").read_text())
    aux = FAMILIES["qwen3_vl"].default_aux_layer_ids(tcfg)
    counter = iter(range(100))
    out = run(lambda: dump_features(target, samples[:4], tmp_path / f"f{next(counter)}", aux, progress=False))
    from eagle3_plugin.trainer.features import FeatureStore
    assert len(FeatureStore(out).index) == 4


def test_train_step_offline(run, vl, dumped):
    target, _, _ = vl
    cfg, source, draft, updater = _setup(target, {"features": str(dumped)})
    gnorm = run(_one_step, draft, updater, source.samples(source.train_items[:1])[0], source, cfg)
    assert gnorm > 0


def test_ttt_step_memory_grows_linearly(benchmark):
    rows = []
    steps = 7 if os.environ.get("EAGLE3_BENCH_FULL") == "1" else 3          # fast mode: a shorter unroll (the time is quadratic, the memory is not)

    def measure():
        rows.clear()
        for n in (1024, 4096, 16384):
            r = subprocess.run([sys.executable, str(HERE / "ttt_memory.py"), str(n), str(steps)], capture_output=True,
                               text=True, timeout=1800, check=True)
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    benchmark.pedantic(measure, rounds=1, iterations=1)
    for r in rows:
        print(f"TTT step ({steps} unroll steps, fwd+bwd) at {r['tokens']:>5} tokens: peak +{r['peak_mb']:.0f} MB "
              f"({r['mb_per_1k_tokens']:.1f} MB per 1k tokens) in {r['seconds']:.1f} s; a dense unroll keeps "
              f"{r['dense_scores_mb']:.0f} MB of scores alone")
    benchmark.extra_info["rows"] = rows
    small, big = rows[0], rows[-1]
    # 16x the tokens: linear memory is ~16x (plus fixed overhead); a dense L x L unroll would be ~256x
    assert big["peak_mb"] < 2.0 * 16 * max(small["peak_mb"], 8.0)
    assert big["peak_mb"] < 0.25 * big["dense_scores_mb"]
