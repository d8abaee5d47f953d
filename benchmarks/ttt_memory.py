#!/usr/bin/env python
"""Peak memory of ONE draft training step (TTT unroll 7, forward + backward) at a given sequence length, measured
as this process's peak RSS during the step above its RSS just before it (Linux: the peak is reset through
/proc/self/clear_refs first, after returning freed heap to the OS). Run one length per fresh process:

    python benchmarks/ttt_memory.py 16384 [TTT_STEPS]      # prints one JSON line

The draft is a tiny one (hidden 128, 4 heads, vocab 1024) fed random target features, so only the trainer's own
memory is measured. A dense TTT attention would keep B*heads*L*(L+i) fp32 scores per step (the anchors' cost, 32 GB
per step at 16k for a 32-head draft); ours chunks queries and recomputes in the backward pass, and never builds the
target's full-vocab logits, so the peak grows about linearly with L.
"""
from __future__ import annotations

import ctypes
import json
import sys
import time


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> float:
    """Return freed heap to the OS, reset the peak RSS to the current RSS, return that RSS (MB)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mb("VmRSS")


def main(length: int, steps: int = 7) -> dict:
    import torch
    from eagle3_plugin.trainer.draft import init_draft
    from eagle3_plugin.trainer.ttt import target_distribution, ttt_forward

    torch.manual_seed(0)
    H, V, L = 128, 1024, 8
    target_cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": H,
                  "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                  "num_hidden_layers": L, "vocab_size": V, "rope_theta": 1e6, "max_position_embeddings": 65536}
    draft = init_draft(target_cfg, torch.randn(V, H) * 0.02, torch.randn(V, H) * 0.02)
    ids = torch.randint(0, V, (1, length))
    aux = torch.randn(1, length, 3 * H)
    last_hidden, head = torch.randn(1, length, H), torch.randn(V, H) * 0.05
    positions = torch.arange(length)[None]
    mask = torch.ones(1, length, dtype=torch.bool)
    def step(n):
        p, arg = target_distribution(last_hidden[:, :n], head, draft.draft_ids)
        loss, _ = ttt_forward(draft, ids[:, :n], aux[:, :n], p, arg, positions[:, :n], mask[:, :n], steps=steps)
        loss.backward()

    step(min(length, 128))            # one-time library set-up (thread pools, kernels) is not the step's memory
    draft.zero_grad(set_to_none=True)
    before = reset_peak()
    t = time.perf_counter()
    step(length)
    secs = time.perf_counter() - t
    peak = _status_mb("VmHWM") - before
    dense = steps * 4 * length * length * 4 / 2**20       # fp32 scores one dense TTT would keep (4 heads, B=1)
    return {"tokens": length, "ttt_steps": steps, "peak_mb": round(peak, 1), "mb_per_1k_tokens": round(peak / (length / 1024), 1),
            "seconds": round(secs, 2), "dense_scores_mb": round(dense, 1)}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 7)))
