"""--batch-tokens: several conversations per target forward and per draft step give the loss and the gradients the
same conversations give one by one (fp32; tolerance stated per assert), for every family's tiny target with its
real processor and media, online and from a features folder; the budget is kept and a too-small one is refused."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from eagle3_plugin import fixtures
from eagle3_plugin.families import FAMILIES
from eagle3_plugin.devtools.tiny import cached_tiny_target
from eagle3_plugin.trainer.batching import BatchTokensError, check_budget, micro_batches, stack_features
from eagle3_plugin.trainer.data import Tokenizer, read_jsonl
from eagle3_plugin.trainer.draft import init_draft
from eagle3_plugin.trainer.evaluate import batch_loss
from eagle3_plugin.trainer.target import Target

FAMILY_NAMES = list(FAMILIES)
CFG = SimpleNamespace(ttt_steps=4, ttt_decay=0.8, batch_tokens=0)
# fp32 sums in another order (batched matmuls, a padded attention mask): measured up to 3e-5 (HunYuanVL), 1e-6 elsewhere
RTOL = 1e-4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("cache")


def _samples(target, family, n=3):
    tok = Tokenizer(target, FAMILIES[family])
    kind = FAMILIES[family].modality
    convs = [c for c in read_jsonl(fixtures.CONVERSATIONS)
             if (c.media and c.media[0][0] == kind) or (kind == "text" and not c.media)]
    samples = [s for c in convs for s in tok.encode(c)][:n]
    assert len({s.num_tokens for s in samples}) > 1, "the test needs conversations of different lengths"
    return samples


def _loss_and_grads(draft, groups, source_batch):
    draft.zero_grad()
    total = 0.0
    for g in groups:
        loss, st = batch_loss(draft, *source_batch(g), CFG)
        loss.backward()
        total += float(loss.detach())
    return total, {n: p.grad.clone() for n, p in draft.named_parameters() if p.requires_grad}


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) <= RTOL * max(float(a.abs().max()), 1e-12)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_packed_loss_and_gradients_equal_one_by_one(cache, family):
    target_dir = cached_tiny_target(family, cache_dir=cache)
    target = Target(target_dir)
    samples = _samples(target_dir, family)
    aux = list(FAMILIES[family].aux_layer_ids(target.config, None))
    draft = init_draft(target.config, target.embed_weight(), target.lm_head_weight(), seed=0,
                       aux_layer_ids=tuple(aux))
    from eagle3_plugin.trainer.batching import target_inputs
    online = lambda g: (g, target.features(target_inputs(g), aux))
    one = micro_batches(samples, 0)
    packed = micro_batches(samples, sum(s.num_tokens for s in samples) * 2)
    assert len(one) == len(samples) and len(packed) == 1          # all three share one forward
    l1, g1 = _loss_and_grads(draft, one, online)
    l2, g2 = _loss_and_grads(draft, packed, online)
    assert l1 > 0 and abs(l1 - l2) <= RTOL * l1, (l1, l2)
    for name in g1:
        assert _close(g1[name], g2[name]), name
    # offline: per-conversation features stacked into one padded batch (what a features folder gives)
    singles = {id(s): target.features(target_inputs([s]), aux) for s in samples}
    offline = lambda g: (g, stack_features([singles[id(s)] for s in g], max(s.num_tokens for s in g)))
    l3, g3 = _loss_and_grads(draft, packed, offline)
    assert abs(l1 - l3) <= RTOL * l1, (l1, l3)
    for name in g1:
        assert _close(g1[name], g3[name]), name


def test_micro_batches_keep_the_budget_and_every_conversation():
    def s(n, media=False):
        return SimpleNamespace(num_tokens=n, mm_inputs={"pixel_values": 0} if media else {})
    samples = [s(100), s(40), s(90), s(30, True), s(60, True), s(10)]
    groups = micro_batches(samples, 200)
    assert sorted(id(x) for g in groups for x in g) == sorted(id(x) for x in samples)
    for g in groups:
        assert len(g) * max(x.num_tokens for x in g) <= 200
        assert len({tuple(x.mm_inputs) for x in g}) == 1          # media and text rows never share a forward
    assert len(groups) < len(samples)


def test_batch_tokens_below_one_conversation_is_refused(tmp_path, cache):
    with pytest.raises(BatchTokensError, match=r"--batch-tokens 100 is smaller .*--max-length 512.*raise"):
        check_budget(100, 512)
    target = cached_tiny_target("text", cache_dir=cache)
    r = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "train", "--target", str(target),
                        "--data", str(fixtures.CONVERSATIONS), "-o", str(tmp_path / "d"), "--batch-tokens", "64",
                        "--max-length", "512"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "--batch-tokens 64 is smaller than one conversation may be (--max-length 512)" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists()                             # refused before any work
