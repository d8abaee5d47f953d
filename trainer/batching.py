"""Several conversations per target forward and per draft step (`--batch-tokens`).

A step's conversations are grouped by length into micro-batches whose padded size (rows x longest) stays within the
token budget, right-padded, and run through the target and the draft together. Padding sits after each
conversation and outside its loss mask; both the target and the draft attend causally, so no real position ever
sees padding, and ttt_forward normalises each row by its own tokens: a micro-batch gives the gradient its
conversations give one by one (tests/test_batching.py checks it).
"""
from __future__ import annotations

import torch

from .target import TargetFeatures


class BatchTokensError(SystemExit):
    """--batch-tokens cannot hold one conversation (one line on the command line)."""


def check_budget(batch_tokens: int, max_length: int) -> None:
    if batch_tokens and batch_tokens < max_length:
        raise BatchTokensError(
            f"--batch-tokens {batch_tokens} is smaller than one conversation may be (--max-length {max_length}); "
            f"raise --batch-tokens to at least {max_length}, or lower --max-length")


def micro_batches(samples: list, batch_tokens: int) -> list[list]:
    """Groups of samples whose padded size fits `batch_tokens` (0: one conversation per group), longest first.
    Only conversations with the same kinds of processor inputs share a group (a text-only row and an image row
    never meet in one processor batch)."""
    if not batch_tokens:
        return [[s] for s in samples]
    groups: list[list] = []
    for s in sorted(samples, key=lambda s: (sorted(s.mm_inputs), -s.num_tokens)):
        g = groups[-1] if groups else None
        if g and sorted(g[0].mm_inputs) == sorted(s.mm_inputs) and (len(g) + 1) * g[0].num_tokens <= batch_tokens:
            g.append(s)
        else:
            groups.append([s])
    return groups


def _pad(rows: list[torch.Tensor], length: int, fill=0) -> torch.Tensor:
    """[..., T_i] tensors -> [B, ..., length] (right-padded along the last dim)."""
    out = rows[0].new_full((len(rows), *rows[0].shape[:-1], length), fill)
    for b, r in enumerate(rows):
        out[b, ..., :r.shape[-1]] = r
    return out


def padded_tokens(samples: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids [B, T], loss_mask [B, T], attention_mask [B, T] of a micro-batch."""
    T = max(s.num_tokens for s in samples)
    ids = _pad([s.input_ids for s in samples], T)
    mask = _pad([s.loss_mask for s in samples], T, False)
    attn = _pad([torch.ones_like(s.input_ids) for s in samples], T)
    return ids, mask, attn


def target_inputs(samples: list) -> dict:
    """The target's forward inputs for a micro-batch: padded tokens, and processor outputs joined the way the
    processor joins a batch (per-token arrays padded, media tensors concatenated along their first dimension)."""
    ids, _, attn = padded_tokens(samples)
    inputs = {"input_ids": ids, "attention_mask": attn}
    for key in samples[0].mm_inputs:
        values = [s.mm_inputs.get(key) for s in samples]
        if any(v is None for v in values):
            raise ValueError(f"mm input {key!r} is missing from some conversations of a micro-batch")
        per_token = all(torch.is_tensor(v) and v.dim() == 2 and v.shape == (1, s.num_tokens)
                        for v, s in zip(values, samples))
        inputs[key] = (_pad([v[0] for v in values], ids.shape[1]) if per_token else torch.cat(values, dim=0))
    return inputs


def stack_features(features: list[TargetFeatures], length: int) -> TargetFeatures:
    """Per-conversation features ([1, T, D]; positions [1, T] or [3, 1, T]) -> one micro-batch padded to `length`."""
    def join(rows: list[torch.Tensor], time_dim: int, batch_dim: int) -> torch.Tensor:
        pad = lambda r: torch.nn.functional.pad(r, [0, 0] * (r.dim() - 1 - time_dim) + [0, length - r.shape[time_dim]])
        return torch.cat([pad(r) for r in rows], dim=batch_dim)
    positions = [f.positions for f in features]
    mrope = positions[0].dim() == 3
    return TargetFeatures(aux=join([f.aux for f in features], 1, 0),
                          last_hidden=join([f.last_hidden for f in features], 1, 0),
                          positions=join(positions, 2, 1) if mrope else join(positions, 1, 0),
                          head=features[0].head)
