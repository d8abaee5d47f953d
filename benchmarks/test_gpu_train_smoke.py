"""benchmarks/gpu_train.py on the CPU: the shipped Qwen3-VL-2B config is the real model's, and the whole script runs
(--device cpu --tiny-sizes) through the trainer's online, dump and offline paths and writes a complete results
JSON. The GPU figures themselves need a GPU (see the README's Benchmarks section)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _script():
    spec = importlib.util.spec_from_file_location("gpu_train", HERE / "gpu_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shipped_config_is_qwen3_vl_2b():
    from transformers import AutoConfig, Qwen3VLConfig
    cfg = AutoConfig.from_pretrained(str(HERE / "configs" / "qwen3_vl_2b.json"))
    assert isinstance(cfg, Qwen3VLConfig)
    t, v = cfg.text_config, cfg.vision_config
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads, t.head_dim,
            t.intermediate_size, t.vocab_size) == (2048, 28, 16, 8, 128, 6144, 151936)
    rope = t.rope_parameters
    assert rope["rope_theta"] == 5000000 and rope["mrope_section"] == [24, 20, 20] and rope["mrope_interleaved"]
    assert sum(rope["mrope_section"]) == t.head_dim // 2
    assert cfg.tie_word_embeddings
    assert (v.depth, v.hidden_size, v.intermediate_size, v.num_heads, v.patch_size, v.spatial_merge_size,
            v.temporal_patch_size, v.out_hidden_size) == (24, 1024, 4096, 16, 16, 2, 2, 2048)
    assert list(v.deepstack_visual_indexes) == [5, 11, 17]
    assert (cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id) == \
        (151655, 151656, 151652, 151653)


def test_special_ids_follow_the_borrowed_tokenizer(cache):
    from transformers import AutoTokenizer
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    g = _script()
    tok = AutoTokenizer.from_pretrained(str(cached_tiny_target("qwen3_vl", cache_dir=cache)))
    raw, changes = g.remap_special_ids(json.loads((HERE / "configs" / "qwen3_vl_2b.json").read_text()), tok)
    ids = tok.get_vocab()
    assert raw["image_token_id"] == ids["<|image_pad|>"] and raw["video_token_id"] == ids["<|video_pad|>"]
    assert raw["vision_start_token_id"] == ids["<|vision_start|>"]
    assert raw["text_config"]["eos_token_id"] == ids["<|im_end|>"]
    assert raw["text_config"]["hidden_size"] == 2048 and "image_token_id" in changes
    with pytest.raises(SystemExit, match="neither a Qwen special id"):
        g.remap_special_ids({"image_token_id": 150000, "text_config": {}}, tok)


def test_cpu_smoke_run_writes_results(cache, tmp_path):
    g = _script()
    out = tmp_path / "gpu-train.json"
    res = g.main(["--device", "cpu", "--tiny-sizes", "--cache", str(cache), "--workdir", str(tmp_path / "work"),
                  "--results", str(out)])
    saved = json.loads(out.read_text())
    assert saved["online_train"]["tokens_per_s"] == pytest.approx(res["online_train"]["tokens_per_s"])
    for key in ("date", "commit", "device", "versions", "target", "online_train", "dump_features", "offline_train"):
        assert key in saved, key
    assert saved["device"]["type"] == "cpu" and saved["device"]["name"]
    assert saved["versions"]["torch"] and saved["versions"]["transformers"]
    for phase in ("online_train", "dump_features", "offline_train"):
        r = saved[phase]
        assert math.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0, (phase, r)
        assert r["tokens"] > 0 and "peak_gpu_mem_gib" in r and r["wall_s"] > 0
    for phase in ("online_train", "offline_train"):
        r = saved[phase]
        assert r["steps"] == 5 and r["measured_steps"] == 4 and r["steps_without_scored_tokens"] == 0
        assert math.isfinite(r["final_loss"]) and r["final_loss"] > 0
    assert saved["online_train"]["target_load_s"] > 0 and saved["dump_features"]["bytes_per_token"] > 0
    t = saved["target"]
    assert t["tiny_sizes"] and t["text"]["vocab_size"] == 151936 and t["text"]["num_hidden_layers"] == 8
    built = json.loads((Path(t["path"]) / "config.json").read_text())
    tok = json.loads((Path(t["path"]) / "tokenizer.json").read_text())
    added = {a["content"]: a["id"] for a in tok["added_tokens"]}
    assert built["image_token_id"] == added["<|image_pad|>"] and built["tie_word_embeddings"]
    assert not (tmp_path / "work" / "features").exists()       # the run's features are removed without --keep
