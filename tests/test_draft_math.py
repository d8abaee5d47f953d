"""The trainer's draft math: TTT attention (chunked == dense, values and gradients) and M-RoPE positions."""
import math

import torch

from eagle3_plugin.trainer.draft import Rotary, ttt_attention


def _dense_reference(q, ks, vs):
    T, d = q.shape[2], q.shape[3]
    s0 = q @ ks[0].transpose(-1, -2) / math.sqrt(d)
    s0 = s0.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    cols = [s0] + [((q * k).sum(-1) / math.sqrt(d))[..., None] for k in ks[1:]]
    w = torch.softmax(torch.cat(cols, -1), -1)
    return w[..., :T] @ vs[0] + sum(w[..., T + j:T + j + 1] * vs[1 + j] for j in range(len(ks) - 1))


def test_ttt_attention_matches_dense_reference_with_gradients():
    torch.manual_seed(0)
    B, h, T, d = 2, 4, 37, 16
    for steps in (1, 3):
        q = torch.randn(B, h, T, d, requires_grad=True)
        ks = [torch.randn(B, h, T, d, requires_grad=True) for _ in range(steps)]
        vs = [torch.randn(B, h, T, d, requires_grad=True) for _ in range(steps)]
        ref = _dense_reference(q, ks, vs)
        for chunk in (8, 1024):
            out = ttt_attention(q, ks, vs, chunk=chunk)
            assert (out - ref).abs().max() < 1e-5
            g1 = torch.autograd.grad(ref.sum(), [q] + ks + vs, retain_graph=True)
            g2 = torch.autograd.grad(out.sum(), [q] + ks + vs)
            assert max((a - b).abs().max().item() for a, b in zip(g1, g2)) < 1e-5


def test_interleaved_mrope_matches_transformers_qwen3_vl():
    from transformers import Qwen3VLTextConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding
    cfg = Qwen3VLTextConfig(hidden_size=128, num_attention_heads=4, head_dim=32,
                            rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [6, 5, 5],
                                             "mrope_interleaved": True})
    hf = Qwen3VLTextRotaryEmbedding(cfg)
    pos = torch.stack([torch.arange(20), torch.arange(20) % 5 + 3, torch.arange(20) // 5 + 7])[:, None]
    cos_hf, sin_hf = hf(torch.zeros(1, 20, 128), pos)
    cos, sin = Rotary(32, 5e6, [6, 5, 5], interleaved=True)(pos)
    assert (cos - cos_hf.float()).abs().max() < 1e-5 and (sin - sin_hf.float()).abs().max() < 1e-5
    # a 1-D draft under an M-RoPE target gets row 0, as vLLM's proposer does
    c1, _ = Rotary(32, 5e6)(pos)
    c0, _ = Rotary(32, 5e6)(pos[0])
    assert torch.equal(c1, c0)
