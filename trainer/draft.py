"""The EAGLE-3 draft as a torch module: the same math as vLLM's ``llama_eagle3.py`` and SGLang's ``llama_eagle3.py``.

    h      = fc(cat(aux_low, aux_mid, aux_high))             only on the first step; later steps feed back `prenorm`
    x      = cat(input_layernorm(embed(tok_{t+1})), hidden_norm(h))         -> q, k, v (rope at position t + step)
    res    = hidden_norm(h) if norm_before_residual else h
    res    = res + o_proj(attn);  x = mlp(post_attention_layernorm(res))
    prenorm = x + res;  logits = lm_head(norm(prenorm))                    (draft vocab; d2t maps to target ids)

Parameter names are the checkpoint's tensor names (``midlayer.*``, ``fc``, ``norm``, ``lm_head``), so
``checkpoint_tensors()`` is just the state dict without the frozen embedding.

Training-time test (TTT) attention: at step i the query at position t sees the step-0 keys k0[0..t] (the verified
context) and the diagonal keys k_j[t] of steps 1..i (its own earlier drafts at that position), which is the KV cache
the draft has at inference. ``ttt_attention`` computes that per query chunk, recomputing chunks in the backward pass
for long sequences, so memory grows linearly with length instead of materialising an L x L score tensor per step.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Rotary(nn.Module):
    """Neox-style RoPE; with ``mrope_section`` the frequencies are split over 3 position rows (T, H, W), either in
    contiguous sections or interleaved (Qwen3-VL), exactly as the engines' MRotaryEmbedding does."""

    def __init__(self, head_dim: int, theta: float, mrope_section=None, interleaved: bool = False):
        super().__init__()
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        self.register_buffer("inv_freq", inv.float(), persistent=False)
        self.section = list(mrope_section) if mrope_section else None
        self.interleaved = interleaved
        if self.section and sum(self.section) != head_dim // 2:
            raise ValueError(f"mrope_section {self.section} must sum to head_dim/2 = {head_dim // 2}")

    def axis_of_freq(self) -> torch.Tensor:
        """For each frequency index, which position row (0=T, 1=H, 2=W) drives it."""
        n = self.inv_freq.numel()
        axis = torch.zeros(n, dtype=torch.long)
        if self.interleaved:
            idx = torch.arange(n)
            axis[(idx % 3 == 1) & (idx < 3 * self.section[1])] = 1
            axis[(idx % 3 == 2) & (idx < 3 * self.section[2])] = 2
        else:
            a, b = self.section[0], self.section[0] + self.section[1]
            axis[a:b], axis[b:] = 1, 2
        return axis

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, T] (1-D) or [3, B, T] (M-RoPE) -> cos, sin [B, T, head_dim] in fp32."""
        if positions.dim() == 3:
            if not self.section:
                positions = positions[0]  # a 1-D draft under an M-RoPE target gets row 0, as in vLLM
            else:
                freqs = positions.float()[..., None] * self.inv_freq  # [3, B, T, n]
                axis = self.axis_of_freq().to(positions.device).view(1, 1, 1, -1).expand(1, *freqs.shape[1:])
                freqs = freqs.gather(0, axis).squeeze(0)                # row axis[j] drives frequency j
                emb = torch.cat([freqs, freqs], -1)
                return emb.cos(), emb.sin()
        freqs = positions.float()[..., None] * self.inv_freq
        emb = torch.cat([freqs, freqs], -1)
        return emb.cos(), emb.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rot.float() * sin).to(x.dtype)


def _ttt_chunk(q, k0, v0, kd, vd, start: int, scale: float):
    """Attention for queries [start, start+C): causal over k0[:start+C] plus, for each earlier TTT step j, the one
    diagonal key kd[j] at the query's own position (kd/vd: lists of [B, h, C, d], already sliced to the chunk)."""
    c = q.shape[2]
    end = start + c
    s0 = torch.matmul(q, k0[:, :, :end].transpose(-1, -2)).float() * scale          # [B, h, C, end]
    qi = torch.arange(start, end, device=q.device)[:, None]
    kj = torch.arange(end, device=q.device)[None, :]
    s0 = s0.masked_fill(kj > qi, float("-inf"))
    if not kd:
        w = torch.softmax(s0, dim=-1).to(v0.dtype)
        return torch.matmul(w, v0[:, :, :end])
    sd = torch.stack([(q * k).sum(-1) for k in kd], dim=-1).float() * scale         # [B, h, C, S]
    w = torch.softmax(torch.cat([s0, sd], dim=-1), dim=-1).to(v0.dtype)             # [B, h, C, end + S]
    out = torch.matmul(w[..., :end], v0[:, :, :end])
    for j, v in enumerate(vd):
        out = out + w[..., end + j:end + j + 1] * v
    return out


SCORE_BUDGET = 1 << 24     # fp32 score elements per query chunk (64 MiB): bounds the transient attention memory


def ttt_attention(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor], chunk: int | None = None):
    """q [B, h, T, d]; keys/values: per TTT step [B, h, T, d] (already GQA-expanded). Returns [B, h, T, d].
    Query chunks are recomputed in the backward pass, so no [T, T] score tensor outlives its chunk; the chunk
    shrinks as T grows, so a chunk's scores stay within SCORE_BUDGET."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    B, h, T, _ = q.shape
    if chunk is None:
        chunk = max(64, min(1024, SCORE_BUDGET // max(1, B * h * T) // 64 * 64))
    if len(keys) == 1 and T <= chunk:
        return F.scaled_dot_product_attention(q, keys[0], values[0], is_causal=True)
    outs = []
    for start in range(0, T, chunk):
        end = min(T, start + chunk)
        args = (q[:, :, start:end], keys[0], values[0], [k[:, :, start:end] for k in keys[1:]],
                [v[:, :, start:end] for v in values[1:]])
        if T > chunk and torch.is_grad_enabled():
            outs.append(checkpoint(_ttt_chunk, *args, start, scale, use_reentrant=False))
        else:
            outs.append(_ttt_chunk(*args, start, scale))
    return torch.cat(outs, dim=2)


class _Attention(nn.Module):
    def __init__(self, hidden: int, n_heads: int, n_kv: int, head_dim: int):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = n_heads, n_kv, head_dim
        self.q_proj = nn.Linear(2 * hidden, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(2 * hidden, n_kv * head_dim, bias=False)
        self.v_proj = nn.Linear(2 * hidden, n_kv * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, hidden, bias=False)

    def forward(self, x, cos, sin, cache: list[tuple[torch.Tensor, torch.Tensor]]):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        rep = self.n_heads // self.n_kv
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        cache.append((k, v))
        out = ttt_attention(q, [c[0] for c in cache], [c[1] for c in cache])
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class _MLP(nn.Module):
    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _DraftLayer(nn.Module):
    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        h, eps = int(cfg["hidden_size"]), float(cfg.get("rms_norm_eps", 1e-6))
        nh = int(cfg["num_attention_heads"])
        self.input_layernorm = RMSNorm(h, eps)
        self.hidden_norm = RMSNorm(h, eps)
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.self_attn = _Attention(h, nh, int(cfg.get("num_key_value_heads") or nh),
                                    int(cfg.get("head_dim") or h // nh))
        self.mlp = _MLP(h, int(cfg["intermediate_size"]))
        self.norm_before_residual = bool(cfg.get("norm_before_residual", False))

    def forward(self, embeds, hidden, cos, sin, cache):
        hn = self.hidden_norm(hidden)
        residual = hn if self.norm_before_residual else hidden
        x = torch.cat([self.input_layernorm(embeds), hn], dim=-1)
        residual = residual + self.self_attn(x, cos, sin, cache)
        x = self.mlp(self.post_attention_layernorm(residual))
        return x + residual


class Eagle3Draft(nn.Module):
    def __init__(self, cfg: Mapping[str, Any], embed_weight: torch.Tensor | None = None):
        super().__init__()
        self.cfg = dict(cfg)
        h, vocab = int(cfg["hidden_size"]), int(cfg["vocab_size"])
        dvocab = int(cfg.get("draft_vocab_size") or vocab)
        th = int(cfg.get("target_hidden_size") or h)
        n_aux = len(cfg.get("eagle_aux_hidden_state_layer_ids") or (0, 0, 0))
        nh = int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or h // nh)
        rope = cfg.get("rope_scaling") or {}
        self.embed_tokens = nn.Embedding(vocab, h)
        self.embed_tokens.weight.requires_grad_(False)      # frozen: the engines share the target's embedding
        if embed_weight is not None:
            self.embed_tokens.weight.data.copy_(embed_weight)
        self.fc = nn.Linear(n_aux * th, h, bias=False)
        self.midlayer = _DraftLayer(cfg)
        self.norm = RMSNorm(h, float(cfg.get("rms_norm_eps", 1e-6)))
        self.lm_head = nn.Linear(h, dvocab, bias=False)
        self.rotary = Rotary(head_dim, float(cfg.get("rope_theta", 10000.0)), rope.get("mrope_section"),
                             bool(rope.get("mrope_interleaved", False)))
        self.register_buffer("d2t", torch.zeros(dvocab, dtype=torch.long))
        self.register_buffer("t2d", torch.ones(vocab, dtype=torch.bool) if dvocab == vocab
                             else torch.zeros(vocab, dtype=torch.bool))

    # ---- vocab maps
    def set_vocab(self, draft_to_target: torch.Tensor) -> None:
        """draft_to_target: sorted target ids of the draft vocab (len = draft_vocab_size)."""
        ids = draft_to_target.to(torch.long)
        self.d2t.copy_(ids - torch.arange(ids.numel()))
        self.t2d.zero_()
        self.t2d[ids] = True

    @property
    def draft_ids(self) -> torch.Tensor:
        """Target id of each draft-vocab row."""
        return torch.arange(self.d2t.numel(), device=self.d2t.device) + self.d2t

    # ---- the math
    def step(self, input_ids, hidden, positions, cache, step_index: int = 0):
        """One draft step over all positions: returns prenorm hidden [B, T, H] (feed back as `hidden`)."""
        pos = positions + step_index
        cos, sin = self.rotary(pos)
        return self.midlayer(self.embed_tokens(input_ids), hidden, cos, sin, cache)

    def logits(self, prenorm: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(prenorm))

    def forward_step0(self, input_ids, aux_hidden, positions):
        """The first draft forward (what engines run over verified tokens): (draft logits, prenorm hidden)."""
        prenorm = self.step(input_ids, self.fc(aux_hidden), positions, cache=[])
        return self.logits(prenorm), prenorm

    # ---- checkpoint I/O
    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        sd = {k: v for k, v in self.state_dict().items() if not k.startswith(("embed_tokens.", "rotary."))}
        if int(self.cfg.get("draft_vocab_size") or self.cfg["vocab_size"]) == int(self.cfg["vocab_size"]):
            sd.pop("d2t"), sd.pop("t2d")   # vLLM refuses d2t for a full-vocab draft
        return sd

    @classmethod
    def from_pretrained(cls, draft_dir, embed_weight: torch.Tensor | None = None) -> "Eagle3Draft":
        from eagle3_plugin.checkpoint import load_draft
        cfg, tensors = load_draft(draft_dir)
        model = cls(cfg, embed_weight)
        missing, unexpected = model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                                     for k, v in tensors.items()}, strict=False)
        missing = [m for m in missing if not m.startswith(("embed_tokens", "d2t", "t2d"))]
        if missing or unexpected:
            raise ValueError(f"{draft_dir}: missing {missing}, unexpected {unexpected}")
        return model


def init_draft(target_cfg: Mapping[str, Any], embed_weight: torch.Tensor, lm_head_weight: torch.Tensor | None = None,
               draft_vocab_ids: torch.Tensor | None = None, seed: int = 0, **config_kw) -> Eagle3Draft:
    """A fresh draft for a target: config from the family table, frozen target embedding, small random layer
    weights, and (if given) lm_head rows copied from the target's head for the draft vocab — a much better start
    than random rows, since the draft's final hidden state lives in the target's output space."""
    from eagle3_plugin.checkpoint import build_draft_config
    vocab = int(embed_weight.shape[0])
    dvocab = int(draft_vocab_ids.numel()) if draft_vocab_ids is not None else vocab
    cfg = build_draft_config(target_cfg, draft_vocab_size=dvocab, **config_kw)
    g = torch.Generator().manual_seed(seed)
    draft = Eagle3Draft(cfg, embed_weight.float())
    for name, p in draft.named_parameters():
        if p.dim() == 2 and p.requires_grad:
            p.data.normal_(0.0, 0.02, generator=g)
    if draft_vocab_ids is not None and dvocab != vocab:
        draft.set_vocab(draft_vocab_ids)
    if lm_head_weight is not None:
        draft.lm_head.weight.data.copy_(lm_head_weight.float()[draft.draft_ids])
    return draft


class InitDraftError(SystemExit):
    """--init-draft names a folder that cannot start this target's draft (one line on the command line)."""


def init_from_draft(target_cfg: Mapping[str, Any], embed_weight: torch.Tensor, draft_dir,
                    aux_layer_ids: tuple[int, ...] | None = None, vllm_runner: str = "v1") -> Eagle3Draft:
    """Fine-tune start: this target's draft config (the family's architecture and positions) carrying the weights
    and draft vocab of an existing EAGLE-3 draft — ours, or a published one in the Llama EAGLE-3 layout
    (`LlamaForCausalLMEagle3` / `Eagle3LlamaForCausalLM`). Its aux layers are kept (its fc was trained on them):
    the ones its config names, else the engines' default (2, L//2, L-3) that such drafts are served with."""
    from eagle3_plugin.checkpoint import build_draft_config, expected_shapes, load_draft
    where = f"--init-draft {draft_dir}"
    try:
        src_cfg, tensors = load_draft(draft_dir)
    except (OSError, ValueError) as e:
        raise InitDraftError(f"{where}: {e}") from None
    aux = init_draft_aux_ids(target_cfg, src_cfg, aux_layer_ids, where)
    dvocab = int(src_cfg.get("draft_vocab_size") or src_cfg.get("vocab_size") or 0)
    try:
        cfg = build_draft_config(target_cfg, aux_layer_ids=tuple(aux), draft_vocab_size=dvocab or None,
                                 norm_before_residual=bool(src_cfg.get("norm_before_residual", False)),
                                 vllm_runner=vllm_runner)
    except ValueError as e:
        raise InitDraftError(f"{where}: {e}") from None
    want = expected_shapes(cfg)
    got = {k: tuple(v.shape) for k, v in tensors.items() if k != "embed_tokens.weight"}
    missing = sorted(set(want) - set(got))
    wrong = [f"{k} {got[k]} (this target needs {want[k]})" for k in sorted(set(want) & set(got)) if got[k] != want[k]]
    if missing or wrong:
        detail = "; ".join(([f"missing {', '.join(missing[:4])}"] if missing else []) + wrong[:4])
        raise InitDraftError(f"{where}: not a draft for this target ({detail}); give a draft trained for a target "
                             f"of the same sizes and vocabulary, or train from scratch without --init-draft")
    draft = Eagle3Draft(cfg, embed_weight.float())
    draft.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()
                           if k in want}, strict=False)
    if "d2t" in want:
        draft.set_vocab(draft.draft_ids)       # t2d follows from d2t, whatever the source stored
    return draft


def init_draft_aux_ids(target_cfg: Mapping[str, Any], draft_cfg: Mapping[str, Any] | str,
                       chosen=None, where: str = "--init-draft") -> tuple[int, ...]:
    """The aux layers an --init-draft reads (its config's, else the engines' default), checked against the user's."""
    from eagle3_plugin.checkpoint import aux_layer_ids as draft_aux_ids
    from eagle3_plugin.checkpoint import read_folder_config
    from eagle3_plugin.families import family_for_target
    if not isinstance(draft_cfg, Mapping):
        where = f"--init-draft {draft_cfg}"
        try:
            draft_cfg = read_folder_config(draft_cfg, "draft")
        except ValueError as e:
            raise InitDraftError(f"{where}: {e}") from None
    n = family_for_target(target_cfg).num_layers(target_cfg)
    aux = draft_aux_ids(draft_cfg) or (2, n // 2, n - 3)
    if chosen and tuple(chosen) != tuple(aux):
        raise InitDraftError(f"{where}: the draft reads aux layers {list(aux)}, not --aux-layer-ids "
                             f"{list(chosen)}; drop --aux-layer-ids to keep the draft's")
    return tuple(aux)
