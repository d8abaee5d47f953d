"""The draft vocabulary: the most frequent *training-target* tokens (loss-masked positions only), sorted by id.

d2t[i] = target_id(i) - i (int64 offsets, what vLLM and SGLang read); t2d = bool mask over the target vocab.
If the data has fewer distinct tokens than asked, the vocab is filled with the lowest unused ids, so its size is
exactly --draft-vocab-size (the config promises it).
"""
from __future__ import annotations

from collections import Counter

import torch


def draft_vocab_ids(freq: Counter, vocab_size: int, draft_vocab_size: int) -> torch.Tensor:
    """Sorted target ids of the draft vocab; the full vocab when draft_vocab_size >= vocab_size."""
    if draft_vocab_size >= vocab_size:
        return torch.arange(vocab_size)
    chosen = [t for t, _ in freq.most_common(draft_vocab_size) if 0 <= t < vocab_size]
    if len(chosen) < draft_vocab_size:
        taken = set(chosen)
        chosen += [t for t in range(vocab_size) if t not in taken][:draft_vocab_size - len(chosen)]
    return torch.tensor(sorted(chosen), dtype=torch.long)


def coverage(freq: Counter, ids: torch.Tensor) -> float:
    """Share of training-target occurrences the draft vocab covers."""
    total = sum(freq.values())
    keep = set(ids.tolist())
    return sum(c for t, c in freq.items() if t in keep) / total if total else 0.0
