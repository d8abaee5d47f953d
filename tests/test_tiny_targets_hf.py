"""Every tiny target is a real checkpoint: AutoProcessor + its model class load it, and a forward pass and a short
greedy generate run on a real fixture image / waveform. Builds are deterministic."""
import json

import pytest

from eagle3_plugin.families import FAMILIES
import torch

from eagle3_plugin import fixtures
from eagle3_plugin.devtools.tiny import build_tiny_target, cached_tiny_target


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    import os
    return os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("cache")


def _inputs(family, processor):
    if family in ("qwen3_vl", "hunyuan_vl"):
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is written here?"}]}]
        text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return processor(text=[text], images=[fixtures.load_image("images/receipt.png")], return_tensors="pt")
    if family == "qwen2_audio":
        msgs = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is said?"}]}]
        text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        wav, sr = fixtures.load_audio("audio/hello.wav")
        return processor(text=[text], audio=[wav], sampling_rate=sr, return_tensors="pt")
    msgs = [{"role": "user", "content": "What is the water cycle?"}]
    ids = processor.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return ids


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_target_loads_forwards_and_generates(family, cache):
    import transformers
    from eagle3_plugin.trainer.target import model_class, decoder_layers
    path = cached_tiny_target(family, cache_dir=cache)
    cfg = json.loads((path / "config.json").read_text())
    text_cfg = cfg.get("text_config", cfg)
    assert text_cfg["num_hidden_layers"] >= 8
    proc = (transformers.AutoTokenizer if family == "text" else transformers.AutoProcessor).from_pretrained(path)
    model = model_class(FAMILIES[family]).from_pretrained(path, dtype=torch.float32).eval()
    # towers have a different depth than the text stack (vLLM's Transformers backend finds layers by count)
    towers = [m for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and m is not
              decoder_layers(model) and len(m) == len(decoder_layers(model))]
    assert not towers
    inputs = _inputs(family, proc)
    n_media = 0
    for attr in FAMILIES[family].placeholder_attrs:
        if attr in cfg:
            n_media += int((inputs["input_ids"] == cfg[attr]).sum())
    if family != "text":
        assert n_media > 8, "the fixture media must expand to many placeholder tokens"
    with torch.no_grad():
        out = model(**inputs)
        assert torch.isfinite(out.logits).all()
        gen = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert gen.shape[1] == inputs["input_ids"].shape[1] + 6


def test_tiny_build_is_deterministic(tmp_path):
    from safetensors.torch import load_file
    a = build_tiny_target("text", tmp_path / "a", seed=3, num_layers=8)
    b = build_tiny_target("text", tmp_path / "b", seed=3, num_layers=8)
    c = build_tiny_target("text", tmp_path / "c", seed=4, num_layers=8)
    wa, wb, wc = (load_file(str(p / "model.safetensors")) for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_the_shipped_pretrained_tiny_targets_are_the_pipeline_s():
    """tests/fixtures/tiny holds, under its spec key, the pretrained tiny target the pipeline builds for each family
    (scripts/test.sh seeds the cache with them): a change of spec or key means rebuilding them
    (python scripts/make_fixtures.py tiny)."""
    import json
    from pathlib import Path
    from eagle3_plugin.devtools.pipeline import PipelineConfig
    from eagle3_plugin.devtools.tiny import TinySpec
    from eagle3_plugin.families import FAMILIES
    root = Path(__file__).resolve().parent / "fixtures" / "tiny"
    shipped = {p.name: json.loads((p / "tiny_spec.json").read_text()) for p in root.iterdir() if p.is_dir()}
    want = {TinySpec(family=f, pretrain_steps=PipelineConfig.for_family(f, workdir="").pretrain_steps).key()
            for f in FAMILIES}
    assert set(shipped) == want
    for key, spec in shipped.items():
        assert TinySpec(**spec).key() == key
        assert (root / key / "model.safetensors").stat().st_size > 1_000_000
