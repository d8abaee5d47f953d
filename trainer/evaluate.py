"""Held-out evaluation of a draft during training: the split (by content, so one prompt or image never lands on both
sides), the TTT metrics per unroll step and the simulated acceptance length an engine should measure.

The simulated acceptance length at k is 1 + the mean, over scored positions, of the number of consecutive draft
tokens (capped at k) that equal the target's greedy tokens — what vLLM's chain decoding accepts on the same text.
"""
from __future__ import annotations

import random
from contextlib import nullcontext

import torch

from .batching import micro_batches, padded_tokens
from .stream import chunks
from .ttt import target_distribution, ttt_forward

SIM_AL_KS = (1, 2, 3, 4, 5, 7)


def split(samples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, eval): about `fraction` of the distinct prompts held out; duplicates of a prompt stay together."""
    if len(samples) < 20 or fraction <= 0:
        return samples, []
    keys = sorted({s.content_key for s in samples})
    random.Random(seed).shuffle(keys)
    held = set(keys[:max(1, int(len(keys) * fraction))])
    return [s for s in samples if s.content_key not in held], [s for s in samples if s.content_key in held]


def distinct(items, exclude: set | None = None) -> list:
    """The first item of each prompt (content_key: text + media bytes), leaving out prompts in `exclude`."""
    seen = set(exclude or ())
    out = []
    for s in items:
        if s.content_key not in seen:
            seen.add(s.content_key)
            out.append(s)
    return out


def memorisation_probe(train_items: list, n: int, seed: int) -> list:
    """Up to `n` distinct training prompts (seeded): the draft's acceptance on them next to the held-out one is the
    memorisation gap."""
    pool = distinct(train_items)
    random.Random(seed + 1).shuffle(pool)
    return pool[:n]


def batch_loss(draft, samples, features, cfg):
    """The TTT loss of a micro-batch of conversations (batching.py) given their padded target features: the sum
    of each conversation's own loss (forward only; the caller runs backward)."""
    dev = draft.fc.weight.device
    ids, mask, _ = padded_tokens(samples)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    with autocast:   # bf16 compute on GPUs; the weights (and so the optimizer) stay fp32
        p, arg = target_distribution(features.last_hidden.to(dev), features.head, draft.draft_ids)
        return ttt_forward(draft, ids.to(dev), features.aux.to(dev), p, arg, features.positions.to(dev),
                           mask.to(dev), cfg.ttt_steps, cfg.ttt_decay)


@torch.no_grad()
def evaluate(draft, items, source, cfg) -> dict:
    """Loss, per-step accuracy and simulated acceptance length over the source's `items` (streamed; unusable
    conversations and bad feature shards are skipped)."""
    draft.eval()
    steps = cfg.ttt_steps
    correct, scored, accept = [0] * steps, [0] * steps, [0.0] * steps
    tokens, loss = 0, 0.0
    streamed = (s for got in source.stream(items) for s in got)
    groups = (g for chunk in chunks(streamed, 64) for g in micro_batches(chunk, cfg.batch_tokens))
    for group in groups:
        got = source.batch(group)
        if got is None:
            continue
        _, st = batch_loss(draft, *got, cfg)
        loss += st.loss * st.tokens
        tokens += st.tokens
        for i in range(steps):
            correct[i] += st.correct[i]
            scored[i] += st.scored[i]
            accept[i] += st.accept_sum[i]
    draft.train()
    tokens = max(tokens, 1)
    return {"loss": loss / tokens, "acc": [c / max(n, 1) for c, n in zip(correct, scored)],
            "sim_al": {k: 1 + accept[k - 1] / tokens for k in SIM_AL_KS if k <= steps}}


def headline_al(ev: dict) -> float:
    """The acceptance length the best draft is chosen by: k = 3 (or the longest unroll below it)."""
    return ev["sim_al"].get(3, ev["sim_al"][max(ev["sim_al"])])
