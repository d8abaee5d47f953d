"""--init-draft: fine-tuning starts from an existing EAGLE-3 draft (ours, or a published one in the Llama EAGLE-3
layout with no aux ids in its config), keeps its draft vocab and aux layers, and refuses a draft that does not fit
the target with one line naming what differs."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from eagle3_plugin import fixtures
from eagle3_plugin.devtools.tiny import cached_tiny_target
from eagle3_plugin.trainer.config import TrainConfig
from eagle3_plugin.trainer.draft import InitDraftError
from eagle3_plugin.trainer.loop import train


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("cache")


def _train(target, out, **kw):
    cfg = dict(target=str(target), output=str(out), data=str(fixtures.CONVERSATIONS), render_check=0,
               progress=False, eval_fraction=0.0, draft_vocab_size=256, ttt_steps=3, warmup_steps=2)
    cfg.update(kw)
    return train(TrainConfig(**cfg))


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    target = cached_tiny_target("text", cache_dir=cache)
    out = tmp_path_factory.mktemp("init") / "a"
    _train(target, out, max_steps=30, lr=3e-3)
    return target, out


def _weights(d):
    return load_file(str(d / "model.safetensors"))


def test_fine_tuning_starts_from_the_given_draft(trained, tmp_path):
    target, a = trained
    _train(target, tmp_path / "b", init_draft=str(a), max_steps=1, lr=1e-9, warmup_steps=1)
    wa, wb = _weights(a), _weights(tmp_path / "b")
    assert set(wa) == set(wb)
    assert torch.equal(wa["d2t"], wb["d2t"]) and torch.equal(wa["t2d"], wb["t2d"])   # its draft vocab
    for k in wa:
        assert (wa[k].float() - wb[k].float()).abs().max() <= 1e-6, k
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (a, tmp_path / "b"))
    assert cb["eagle_aux_hidden_state_layer_ids"] == ca["eagle_aux_hidden_state_layer_ids"]
    # from scratch, the same one step lands far from the trained weights: the test can tell the two apart
    _train(target, tmp_path / "c", max_steps=1, lr=1e-9, warmup_steps=1)
    wc = _weights(tmp_path / "c")
    assert (wa["fc.weight"].float() - wc["fc.weight"].float()).abs().max() > 1e-2


def test_a_published_llama_layout_draft_is_accepted(trained, tmp_path):
    """The layout of released EAGLE-3 weights: LlamaForCausalLMEagle3, the engines' default aux layers (no ids in
    the config), the embedding stored along."""
    target, a = trained
    pub = tmp_path / "published"
    pub.mkdir()
    cfg = json.loads((a / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLMEagle3"]
    for k in ("eagle_aux_hidden_state_layer_ids", "eagle_config", "eagle3_plugin"):
        cfg.pop(k, None)
    (pub / "config.json").write_text(json.dumps(cfg))
    w = _weights(a)
    w["embed_tokens.weight"] = torch.zeros(int(cfg["vocab_size"]), int(cfg["hidden_size"]))
    save_file(w, str(pub / "model.safetensors"))
    _train(target, tmp_path / "b", init_draft=str(pub), max_steps=1, lr=1e-9, warmup_steps=1)
    cb = json.loads((tmp_path / "b" / "config.json").read_text())
    n = json.loads((target / "config.json").read_text())["num_hidden_layers"]
    assert cb["eagle_aux_hidden_state_layer_ids"] == [2, n // 2, n - 3]        # what the engines served it with
    assert (_weights(tmp_path / "b")["fc.weight"] - w["fc.weight"]).abs().max() <= 1e-6


def test_a_draft_that_does_not_fit_is_refused(trained, tmp_path, cache):
    target, a = trained
    bad = tmp_path / "other"
    shutil.copytree(a, bad)
    w = _weights(bad)
    w["fc.weight"] = w["fc.weight"][:, :-8].contiguous()             # another target's hidden size
    save_file(w, str(bad / "model.safetensors"))
    with pytest.raises(InitDraftError, match=r"--init-draft .*other: not a draft for this target \(fc\.weight"):
        _train(target, tmp_path / "b", init_draft=str(bad), max_steps=1)
    with pytest.raises(InitDraftError, match=r"reads aux layers \[.*\], not --aux-layer-ids \[1, 2, 3\]"):
        _train(target, tmp_path / "c", init_draft=str(a), aux_layer_ids=[1, 2, 3], max_steps=1)
    with pytest.raises(InitDraftError, match=r"--init-draft .*missing: no such folder"):
        _train(target, tmp_path / "d", init_draft=str(tmp_path / "missing"), max_steps=1)
    assert not (tmp_path / "b" / "model.safetensors").exists()
