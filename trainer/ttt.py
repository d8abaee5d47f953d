"""One training step of EAGLE-3's training-time test (TTT): unroll the draft `steps` times over a sequence, feeding
back its own hidden states, and score each step against the target.

Index t of every tensor is the draft position fed (target aux state h_t, token t+1). At step i it simulates the
draft's i-th speculative token after verified position t: input token t+1+i, rotary position pos_t + i, target
distribution = the target's distribution at t+1+i (what the target will say), predicted token t+2+i.
Loss: soft cross-entropy against the target distribution renormalised over the draft vocab, on assistant tokens
whose target argmax is in the draft vocab, weighted decay**i, normalised by the number of scored tokens.

Memory stays linear in sequence length: the target's full-vocab logits are never built (the teacher is computed
from the target's last hidden state in position chunks), the TTT attention is chunked (draft.py), and each step's
draft logits are recomputed in the backward pass instead of being kept (one [T, H] tensor per step survives).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint


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


@torch.no_grad()
def target_distribution(last_hidden: torch.Tensor, head: torch.Tensor, draft_ids: torch.Tensor, chunk: int = 1024):
    """From the target's last hidden state [B, T, H] and lm_head [V, H]: the target distribution renormalised over
    the draft vocab [B, T, Vd] (fp32) and the full-vocab argmax [B, T], a chunk of positions at a time."""
    B, T, _ = last_hidden.shape
    head = head.to(last_hidden.device)
    p = torch.empty(B, T, draft_ids.numel(), dtype=torch.float32, device=last_hidden.device)
    arg = torch.empty(B, T, dtype=torch.long, device=last_hidden.device)
    for s in range(0, T, chunk):
        logits = last_hidden[:, s:s + chunk].float() @ head.float().T                 # [B, C, V]
        arg[:, s:s + chunk] = logits.argmax(-1)
        p[:, s:s + chunk] = torch.softmax(logits[..., draft_ids], dim=-1)
    return p, arg


def _soft_ce(draft, prenorm, p_all, weight, i: int):
    """Per row b: Σ over positions t of weight[b, t] * CE(p_all[b, t + i], softmax(draft logits[b, t])) -> [B], and
    the draft argmax. The step's target is a view of p_all (no per-step copy is kept for the backward pass)."""
    n = prenorm.shape[1] - i
    logits = draft.logits(prenorm[:, :n]).float()
    logq = torch.log_softmax(logits, dim=-1)
    pred = torch.zeros(prenorm.shape[:2], dtype=torch.long, device=prenorm.device)
    pred[:, :n] = logits.argmax(-1)
    return -((p_all[:, i:] * logq).sum(-1) * weight[:, :n]).sum(-1), pred


def ttt_forward(draft, input_ids, aux, target_p, target_arg, positions, loss_mask, steps: int = 7,
                decay: float = 0.8):
    """input_ids/loss_mask/target_arg [B, T]; aux [B, T, nH]; target_p [B, T, Vd] (target_distribution);
    positions [B, T] or [3, B, T]. Returns (loss tensor, StepStats).

    Each row is one conversation (a packed batch is right-padded, the padding outside loss_mask; attention is
    causal, so padding never reaches a real position) and is normalised by its own scored tokens: the loss is the
    sum over rows of what each conversation alone gives, so packing changes speed, never the gradient."""
    B, T = input_ids.shape
    draft_ids = draft.draft_ids                                           # [Vd] target id of each draft row
    # Everything has length T-1: position t in [0, T-2] has a next token t+1.
    tok = input_ids[:, 1:]
    hidden = draft.fc(aux[:, :-1].to(draft.fc.weight.dtype))
    pos = positions[..., :-1]
    valid_pos = torch.ones(B, T - 1, dtype=torch.bool, device=input_ids.device)
    p_all, arg_all = target_p[:, 1:], target_arg[:, 1:]                  # the target at t+1
    mask_all = _shift(loss_mask, 2, fill=False)[:, :T - 1]                 # predicted token t+2 is assistant
    cache: list = []
    # zero, but in the graph of every trainable weight: a conversation with no scored position still gives each
    # weight a gradient, so every rank reduces the same tensors (DeepSpeed and plain DP alike)
    total = sum(p.sum() for p in draft.parameters() if p.requires_grad) * 0.0
    row_loss = torch.zeros(B, device=input_ids.device)                  # detached, for the stats
    correct, scored, runs = [], [], []
    for i in range(steps):
        prenorm = draft.step(_shift(tok, i), hidden, pos, cache, step_index=i)
        valid = _shift(valid_pos, i, fill=False)
        tgt_arg = _shift(arg_all, i)
        m = _shift(mask_all, i, fill=False) & valid & draft.t2d[tgt_arg]
        n_row = m.sum(-1)
        n = int(n_row.sum())
        if torch.is_grad_enabled():
            ce, pred = checkpoint(_soft_ce, draft, prenorm, p_all, m.float(), i, use_reentrant=False)
        else:
            ce, pred = _soft_ce(draft, prenorm, p_all, m.float(), i)
        if n:
            per_row = (decay ** i) * ce / n_row.clamp(min=1)
            total = total + per_row.sum()
            row_loss += per_row.detach().float()
        hit = (draft_ids[pred] == tgt_arg) & valid
        correct.append(int((hit & m).sum()))
        scored.append(n)
        if i == 0:
            m0, chain, run, n0_row = m, hit.clone(), hit.long(), n_row
        else:
            chain = chain & hit
            run = run + chain.long()
        runs.append(run.clone())
        hidden = prenorm
    # consecutive-correct length from step 0, at positions scored at step 0 (simulated acceptance)
    accept_sum = [float(torch.clamp(runs[k - 1], max=k)[m0].sum()) for k in range(1, steps + 1)]
    # loss * tokens = Σ over rows of (row loss * row tokens): token-weighted means stay right across packed rows
    row_mean_loss = float((row_loss * n0_row).sum()) / max(1, scored[0])
    return total, StepStats(row_mean_loss, scored[0], correct, scored, accept_sum)
