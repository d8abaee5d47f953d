"""One training step of EAGLE-3's training-time test (TTT): unroll the draft `steps` times over a sequence, feeding
back its own hidden states, and score each step against the target.

Index t of every tensor is the draft position fed (target aux state h_t, token t+1). At step i it simulates the
draft's i-th speculative token after verified position t: input token t+1+i, rotary position pos_t + i, target
distribution = the target's logits at t+1+i (what the target will say), predicted token t+2+i.
Loss: soft cross-entropy against the target distribution renormalised over the draft vocab, on assistant tokens
whose target argmax is in the draft vocab, weighted decay**i, normalised by the number of scored tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class StepStats:
    loss: float
    tokens: int                 # scored positions at step 0
    correct: list[int]          # per TTT step: draft argmax == target argmax (full vocab), on scored positions
    scored: list[int]           # per TTT step: number of scored positions
    accept_sum: list[float]     # per k in 1..steps: sum over step-0 positions of min(k, consecutive correct)


def _shift(x: torch.Tensor, by: int, dim: int = -1, fill=0) -> torch.Tensor:
    """x shifted left by `by` along dim, padded at the end."""
    if by == 0:
        return x
    idx = [slice(None)] * x.dim()
    idx[dim] = slice(by, None)
    pad_shape = list(x.shape)
    pad_shape[dim] = by
    return torch.cat([x[tuple(idx)], torch.full(pad_shape, fill, dtype=x.dtype, device=x.device)], dim=dim)


def ttt_forward(draft, input_ids, aux, target_logits, positions, loss_mask, steps: int = 7, decay: float = 0.8):
    """input_ids/loss_mask [B, T]; aux [B, T, nH]; target_logits [B, T, V]; positions [B, T] or [3, B, T].
    Returns (loss tensor, StepStats)."""
    B, T = input_ids.shape
    draft_ids = draft.draft_ids                                        # [Vd] target id of each draft row
    t2d = draft.t2d
    # Everything has length T-1: position t in [0, T-2] has a next token t+1.
    tok = input_ids[:, 1:]
    hidden = draft.fc(aux[:, :-1].to(draft.fc.weight.dtype))
    pos = positions[..., :-1]
    valid_pos = torch.ones(B, T - 1, dtype=torch.bool, device=input_ids.device)
    cache: list = []
    total = torch.zeros((), device=input_ids.device)
    correct, scored = [], []
    chain = None
    tgt_all = target_logits[:, 1:].float()                                # target at t+1
    mask_all = _shift(loss_mask, 2, fill=False)[:, :T - 1]                 # predicted token t+2 is assistant
    n0 = None
    for i in range(steps):
        prenorm = draft.step(_shift(tok, i), hidden, pos, cache, step_index=i)
        logits = draft.logits(prenorm).float()                            # [B, T-1, Vd]
        tgt = _shift(tgt_all, i, dim=1)
        tgt_arg = tgt.argmax(-1)
        m = _shift(mask_all, i, fill=False) & _shift(valid_pos, i, fill=False) & t2d[tgt_arg]
        p = torch.softmax(tgt[..., draft_ids], dim=-1)
        logq = torch.log_softmax(logits, dim=-1)
        n = int(m.sum())
        if n:
            ploss = -(p * logq).sum(-1)[m].sum() / n
            total = total + (decay ** i) * ploss
        hit = (draft_ids[logits.argmax(-1)] == tgt_arg) & _shift(valid_pos, i, fill=False)
        correct.append(int((hit & m).sum()))
        scored.append(n)
        if i == 0:
            n0, m0 = n, m
            chain = hit.clone()
            run = hit.long()
        else:
            chain = chain & hit
            run = run + chain.long()
        hidden = prenorm
        if i == 0:
            runs = [run.clone()]
        else:
            runs.append(run.clone())
    # consecutive-correct length from step 0, at positions scored at step 0 (simulated acceptance)
    accept_sum = [float(torch.clamp(runs[k - 1], max=k)[m0].sum()) for k in range(1, steps + 1)]
    return total, StepStats(float(total.detach()), n0 or 0, correct, scored, accept_sum)
