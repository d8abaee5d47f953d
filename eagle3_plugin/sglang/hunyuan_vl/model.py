"""HunyuanOCR (``HunYuanVLForConditionalGeneration``) for SGLang: a native port, since SGLang has no model for it and
its Transformers fallback cannot serve it (4-axis XD-RoPE against SGLang's 3-row M-RoPE, no aux capture, no
``mm_input_embeds`` for the draft).

Math reference: transformers 5.19 ``models/hunyuan_vl/modeling_hunyuan_vl.py``. Weight names: the Hub checkpoint layout
(``model.*`` text, ``vit.*`` vision, ``vit.perceive.*`` merger, tied ``lm_head``), which transformers' own
``save_pretrained`` also writes; transformers' in-memory names (``model.language_model.*``, ``model.vision_tower.*``,
``layer_norm1``, ``fc1``, ``patch_merger.proj_conv`` ...) load too.

Pieces:
  * text model: HunYuan dense decoder (qk-norm applied after the rotary, NTK-alpha base) with SGLang's RMSNorm,
    QKVParallelLinear, RowParallelLinear, MergedColumnParallelLinear and RadixAttention; EAGLE-3 aux capture of the
    residual stream entering the configured layers.
  * XD-RoPE: the rotary frequencies come from SGLang's ``DynamicNTKAlphaRotaryEmbedding`` (via ``get_rope``); each
    ``2*section`` slice of the (duplicated) frequency vector is driven by one position axis, exactly as
    ``HunYuanVLRotaryEmbedding.recomposition_frequencies``. Axes are (sequence, width, height, image index): SGLang
    carries the last three in its 3-row ``mrope_positions`` and the sequence axis is its 1-D ``positions``; for text
    all axes are equal, which reduces to plain 1-D RoPE.
  * vision tower: learned, interpolated patch positions, ViT blocks on SGLang's ``VisionAttention`` (block-diagonal
    per image), and the conv patch merger that appends a newline column and begin/end embeddings.
  * processor: a ``BaseMultimodalProcessor`` subclass running HF's HunYuanVLProcessor and computing the XD-RoPE ids
    exactly like ``HunYuanVLModel.get_rope_index``.
Not supported: pipeline parallelism, video.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sglang.srt.layers.activation import SiluAndMul
from sglang.srt.layers.attention.vision import VisionAttention
from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.layers.linear import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.pooler import Pooler, PoolingType
from sglang.srt.layers.quantization.base_config import QuantizationConfig
from sglang.srt.layers.radix_attention import RadixAttention
from sglang.srt.layers.rotary_embedding import get_rope
from sglang.srt.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from sglang.srt.managers.mm_utils import general_mm_embed_routine
from sglang.srt.managers.schedule_batch import MultimodalDataItem, MultimodalProcessorOutput
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_loader.weight_utils import default_weight_loader
from sglang.srt.multimodal.processors.base_processor import BaseMultimodalProcessor, MultimodalSpecialTokens
from sglang.srt.utils import add_prefix

try:                                    # 0.5.13+: parallel state lives in the runtime context
    from sglang.srt.runtime_context import get_parallel

    def _tp_size() -> int:
        return get_parallel().tp_size

    def _pp_group():
        return get_parallel().pp_group
except ImportError:                     # 0.5.14 builds without runtime_context
    from sglang.srt.distributed import get_pp_group as _pp_group
    from sglang.srt.distributed import get_tensor_model_parallel_world_size as _tp_size

try:                                    # 0.5.2x
    from sglang.srt.managers.mm_utils import pad_mm_tokens
except ImportError:                     # 0.5.14 - 0.5.1x
    from sglang.srt.managers.mm_utils import MultiModalityDataPaddingPatternMultimodalTokens as _Pattern

    def pad_mm_tokens(input_ids, mm_inputs):
        return _Pattern().pad_input_tokens(input_ids, mm_inputs)

log = logging.getLogger("sglang.eagle3_plugin")

ARCH = "HunYuanVLForConditionalGeneration"


def _text_config(config):
    return getattr(config, "text_config", None) or config


def _rope_params(tc) -> dict:
    rp = getattr(tc, "rope_parameters", None) or getattr(tc, "rope_scaling", None) or {}
    rp = dict(rp)
    if "mrope_section" not in rp and "xdrope_section" in rp:
        rp["mrope_section"] = rp["xdrope_section"]
    if "rope_theta" not in rp:
        rp["rope_theta"] = getattr(tc, "rope_theta", 10000.0)
    return rp


# ==================================================================================================== XD-RoPE
class XDRotaryEmbedding(nn.Module):
    """HunYuanVL's multi-axis rotary on top of an SGLang rotary embedding (its cos/sin cache and 1-D fast path)."""

    def __init__(self, rope: nn.Module, head_dim: int, sections: Optional[Sequence[int]]):
        super().__init__()
        self.rope = rope
        self.head_dim = head_dim
        self.sections = [int(s) for s in sections] if sections else []
        if self.sections:
            if 2 * sum(self.sections) != head_dim:
                raise ValueError(f"xdrope sections {self.sections} must sum to head_dim/2 = {head_dim // 2}")
            axis = []
            for i, s in enumerate(self.sections):
                axis += [i % len(self.sections)] * (2 * s)
            self.register_buffer("axis_of_dim", torch.tensor(axis, dtype=torch.long), persistent=False)

    @property
    def num_axes(self) -> int:
        return len(self.sections)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        if positions.dim() == 1 or not self.sections:
            return self.rope(positions.reshape(-1) if positions.dim() == 1 else positions[0], q, k)
        n_axes, n = positions.shape
        cache = self.rope.cos_sin_cache.float()
        cos, sin = cache.index_select(0, positions.reshape(-1).long()).view(n_axes, n, -1).chunk(2, dim=-1)
        idx = self.axis_of_dim.view(1, 1, -1).expand(1, n, self.head_dim)
        cos = torch.cat([cos, cos], dim=-1).gather(0, idx)[0].unsqueeze(1)   # [n, 1, head_dim]
        sin = torch.cat([sin, sin], dim=-1).gather(0, idx)[0].unsqueeze(1)
        return self._apply(q, cos, sin), self._apply(k, cos, sin)

    def _apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # as transformers: cos/sin rounded to the activation dtype, the rotation computed in fp32
        shape, dtype = x.shape, x.dtype
        cos, sin = cos.to(dtype).float(), sin.to(dtype).float()
        xf = x.reshape(shape[0], -1, self.head_dim).float()
        x1, x2 = xf.chunk(2, dim=-1)
        return (xf * cos + torch.cat([-x2, x1], dim=-1) * sin).reshape(shape).to(dtype)


# ==================================================================================================== text model
class HunYuanVLTextMLP(nn.Module):
    def __init__(self, hidden: int, inter: int, act: str, quant_config, prefix: str):
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(hidden, [inter] * 2, bias=False, quant_config=quant_config,
                                                       prefix=add_prefix("gate_up_proj", prefix))
        self.down_proj = RowParallelLinear(inter, hidden, bias=False, quant_config=quant_config,
                                           prefix=add_prefix("down_proj", prefix))
        if act != "silu":
            raise ValueError(f"HunYuanVL: unsupported activation {act!r} (only silu)")
        self.act_fn = SiluAndMul()

    def forward(self, x):
        x, _ = self.gate_up_proj(x)
        x, _ = self.down_proj(self.act_fn(x))
        return x


class HunYuanVLTextAttention(nn.Module):
    def __init__(self, config, layer_id: int, quant_config, prefix: str):
        super().__init__()
        tp = _tp_size()
        hidden = config.hidden_size
        self.total_num_heads = config.num_attention_heads
        self.total_num_kv_heads = getattr(config, "num_key_value_heads", None) or self.total_num_heads
        self.head_dim = getattr(config, "head_dim", None) or hidden // self.total_num_heads
        assert self.total_num_heads % tp == 0
        self.num_heads = self.total_num_heads // tp
        self.num_kv_heads = max(1, self.total_num_kv_heads // tp)
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        bias = bool(getattr(config, "attention_bias", False))
        self.qkv_proj = QKVParallelLinear(hidden, self.head_dim, self.total_num_heads, self.total_num_kv_heads,
                                          bias=bias, quant_config=quant_config, prefix=add_prefix("qkv_proj", prefix))
        self.o_proj = RowParallelLinear(self.total_num_heads * self.head_dim, hidden, bias=bias,
                                        quant_config=quant_config, prefix=add_prefix("o_proj", prefix))
        rp = _rope_params(config)
        scaling = {k: v for k, v in rp.items() if k not in ("mrope_section", "xdrope_section", "rope_theta")}
        scaling["rope_type"] = "dynamic" if rp.get("alpha") else scaling.get("rope_type", "default")
        if scaling["rope_type"] in ("xdrope", "default"):
            scaling = None
        rope = get_rope(self.head_dim, rotary_dim=self.head_dim,
                        max_position=int(getattr(config, "max_position_embeddings", 32768)),
                        base=float(rp["rope_theta"]), rope_scaling=scaling, is_neox_style=True)
        self.rotary_emb = XDRotaryEmbedding(rope, self.head_dim, rp.get("mrope_section"))
        self.query_layernorm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.key_layernorm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.attn = RadixAttention(self.num_heads, self.head_dim, self.head_dim ** -0.5,
                                   num_kv_heads=self.num_kv_heads, layer_id=layer_id,
                                   prefix=add_prefix("attn", prefix))

    def forward(self, positions, hidden_states, forward_batch):
        qkv, _ = self.qkv_proj(hidden_states)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q, k = self.rotary_emb(positions, q, k)
        q = self.query_layernorm(q.reshape(-1, self.head_dim).contiguous()).view(q.shape[0], -1)
        k = self.key_layernorm(k.reshape(-1, self.head_dim).contiguous()).view(k.shape[0], -1)
        out = self.attn(q, k, v, forward_batch)
        out, _ = self.o_proj(out)
        return out


class HunYuanVLDecoderLayer(nn.Module):
    def __init__(self, config, layer_id: int, quant_config, prefix: str):
        super().__init__()
        self.self_attn = HunYuanVLTextAttention(config, layer_id, quant_config, add_prefix("self_attn", prefix))
        self.mlp = HunYuanVLTextMLP(config.hidden_size, config.intermediate_size, config.hidden_act, quant_config,
                                    add_prefix("mlp", prefix))
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, positions, hidden_states, forward_batch, residual):
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions, hidden_states, forward_batch)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual


class HunYuanVLTextModel(nn.Module):
    def __init__(self, config, quant_config=None, prefix: str = ""):
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size,
                                                   prefix=add_prefix("embed_tokens", prefix))
        self.layers = nn.ModuleList([
            HunYuanVLDecoderLayer(config, i, quant_config, add_prefix(f"layers.{i}", prefix))
            for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.num_rope_axes = self.layers[0].self_attn.rotary_emb.num_axes if self.layers else 0
        self.capture_aux_hidden_states = False
        self.layers_to_capture: List[int] = []

    def get_input_embeddings(self):
        return self.embed_tokens

    def xd_positions(self, positions: torch.Tensor, forward_batch: ForwardBatch) -> torch.Tensor:
        """[num_axes, N] XD-RoPE ids: axis 0.. = SGLang's 1-D positions, the last three = its mrope rows (when the
        batch carries them; text-only batches use the 1-D positions on every axis, i.e. plain RoPE)."""
        if not self.num_rope_axes:
            return positions if positions.dim() == 1 else positions[0]
        if positions.dim() == 2:                       # a runner that passes mrope_positions as positions
            rows, pos1d = positions, getattr(forward_batch, "positions", None)
            if pos1d is None or pos1d.shape[-1] != rows.shape[-1]:
                pos1d = rows[0]
        else:
            pos1d, rows = positions, getattr(forward_batch, "mrope_positions", None)
            if rows is None or rows.dim() != 2 or rows.shape[-1] != pos1d.shape[-1]:
                return pos1d
        lead = self.num_rope_axes - rows.shape[0]
        if lead < 0:
            return rows[-self.num_rope_axes:]
        return torch.cat([pos1d.view(1, -1).expand(lead, -1).to(rows.dtype), rows], dim=0)

    def forward(self, input_ids, positions, forward_batch, input_embeds=None, pp_proxy_tensors=None):
        hidden_states = self.embed_tokens(input_ids) if input_embeds is None else input_embeds
        positions = self.xd_positions(positions, forward_batch)
        residual = None
        aux = []
        for i, layer in enumerate(self.layers):
            if i in self.layers_to_capture:
                aux.append(hidden_states.clone() if residual is None else hidden_states + residual)
            hidden_states, residual = layer(positions, hidden_states, forward_batch, residual)
        hidden_states, _ = self.norm(hidden_states, residual)
        if self.capture_aux_hidden_states:
            return hidden_states, aux
        return hidden_states


# ==================================================================================================== vision tower
class _HFRMSNorm(nn.Module):
    """transformers' RMSNorm rounding (weight * normalized.to(input dtype)), used by the patch merger."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class HunYuanVLVisionEmbeddings(nn.Module):
    def __init__(self, vc):
        super().__init__()
        self.vc = vc
        self.patch_size = vc.patch_size
        self.num_channels = getattr(vc, "num_channels", 3)
        self.embed_dim = vc.hidden_size
        self.patch_embedding = nn.Conv2d(self.num_channels, vc.hidden_size, kernel_size=vc.patch_size,
                                         stride=vc.patch_size, bias=True)
        self.position_edge = vc.max_image_size // vc.patch_size
        self.position_embedding = nn.Embedding(self.position_edge ** 2 + 1, vc.hidden_size)
        self.interpolate_mode = getattr(vc, "interpolate_mode", "bilinear")

    def forward(self, pixel_values: torch.Tensor, grid_thw: List[List[int]]) -> torch.Tensor:
        n = pixel_values.shape[0]
        x = pixel_values.reshape(n, self.num_channels, self.patch_size, self.patch_size)
        x = self.patch_embedding(x.to(self.patch_embedding.weight.dtype)).reshape(n, -1)
        grid = self.position_embedding.weight[1:].reshape(1, self.position_edge, self.position_edge, self.embed_dim)
        grid = grid.permute(0, 3, 1, 2).float()
        pos = []
        for t, h, w in grid_thw:
            p = F.interpolate(grid, size=(h, w), mode=self.interpolate_mode, align_corners=False)
            pos.append(p.permute(0, 2, 3, 1).reshape(-1, self.embed_dim).to(x.dtype).repeat(t, 1))
        return x + torch.cat(pos, dim=0)


class HunYuanVLVisionMLP(nn.Module):
    def __init__(self, vc, quant_config, prefix: str):
        super().__init__()
        self.dense_h_to_4h = ColumnParallelLinear(vc.hidden_size, vc.intermediate_size, bias=True,
                                                  quant_config=quant_config,
                                                  prefix=add_prefix("dense_h_to_4h", prefix))
        self.dense_4h_to_h = RowParallelLinear(vc.intermediate_size, vc.hidden_size, bias=True,
                                               quant_config=quant_config, prefix=add_prefix("dense_4h_to_h", prefix))
        if vc.hidden_act not in ("gelu", "gelu_pytorch_tanh"):
            raise ValueError(f"HunYuanVL vision: unsupported activation {vc.hidden_act!r}")
        self.approximate = "tanh" if vc.hidden_act == "gelu_pytorch_tanh" else "none"

    def forward(self, x):
        x, _ = self.dense_h_to_4h(x)
        x, _ = self.dense_4h_to_h(F.gelu(x, approximate=self.approximate))
        return x


class HunYuanVLVisionBlock(nn.Module):
    def __init__(self, vc, quant_config, prefix: str):
        super().__init__()
        eps = getattr(vc, "rms_norm_eps", 1e-5)
        self.input_layernorm = nn.LayerNorm(vc.hidden_size, eps=eps)
        self.post_attention_layernorm = nn.LayerNorm(vc.hidden_size, eps=eps)
        heads = vc.num_attention_heads
        self.self_attn = VisionAttention(
            embed_dim=vc.hidden_size, num_heads=heads, projection_size=vc.hidden_size, use_qkv_parallel=True,
            head_dim=vc.hidden_size // heads, qkv_bias=True, proj_bias=True, flatten_batch=True,
            quant_config=quant_config, prefix=add_prefix("self_attn", prefix))
        self.mlp = HunYuanVLVisionMLP(vc, quant_config, add_prefix("mlp", prefix))

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
        h = self.self_attn(self.input_layernorm(x).unsqueeze(0), cu_seqlens=cu_seqlens)
        x = x + h.reshape(x.shape)
        return x + self.mlp(self.post_attention_layernorm(x))


class HunYuanVLPatchMerger(nn.Module):
    def __init__(self, vc, text_hidden: int):
        super().__init__()
        c, m = vc.hidden_size, vc.spatial_merge_size
        eps = getattr(vc, "rms_norm_eps", 1e-5)
        self.proj = nn.Sequential(nn.Conv2d(c, 2 * c, kernel_size=m, stride=m), nn.GELU(),
                                  nn.Conv2d(2 * c, 4 * c, kernel_size=1))
        self.mlp = nn.Linear(4 * c, text_hidden)
        self.image_newline = nn.Parameter(torch.empty(4 * c))
        self.image_begin = nn.Parameter(torch.empty(text_hidden))
        self.image_end = nn.Parameter(torch.empty(text_hidden))
        self.image_sep = nn.Parameter(torch.empty(text_hidden))
        self.before_rms = _HFRMSNorm(c, eps)
        self.after_rms = _HFRMSNorm(text_hidden, eps)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.before_rms(x)                                          # [h*w, C]
        dtype = x.dtype
        x = x.t().reshape(1, x.shape[1], h, w)
        x = self.proj(x)                                                # [1, 4C, h/m, w/m]
        _, c, gh, gw = x.shape
        x = torch.cat([x, self.image_newline.to(dtype).view(1, c, 1, 1).expand(1, c, gh, 1)], dim=-1)
        x = self.mlp(x.reshape(c, -1).t())                              # [gh*(gw+1), text_hidden]
        x = torch.cat([self.image_begin.to(dtype)[None], x, self.image_end.to(dtype)[None]], dim=0)
        return self.after_rms(x)


class HunYuanVLVisionTransformer(nn.Module):
    def __init__(self, vc, text_hidden: int, quant_config=None, prefix: str = ""):
        super().__init__()
        self.embeddings = HunYuanVLVisionEmbeddings(vc)
        self.layers = nn.ModuleList([HunYuanVLVisionBlock(vc, quant_config, add_prefix(f"layers.{i}", prefix))
                                     for i in range(vc.num_hidden_layers)])
        self.perceive = HunYuanVLPatchMerger(vc, text_hidden)

    @property
    def dtype(self):
        return self.embeddings.patch_embedding.weight.dtype

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        grid = [[int(v) for v in g] for g in grid_thw.tolist()]
        x = self.embeddings(pixel_values.to(self.dtype), grid)
        lens = [h * w for t, h, w in grid for _ in range(t)]
        cu = torch.tensor([0] + lens, dtype=torch.int32, device=x.device).cumsum(0, dtype=torch.int32)
        for layer in self.layers:
            x = layer(x, cu)
        out, start = [], 0
        for t, h, w in grid:
            out.append(self.perceive(x[start:start + t * h * w], h, w))
            start += t * h * w
        return torch.cat(out, dim=0)


# ==================================================================================================== the model
class HunYuanVLForConditionalGeneration(nn.Module):
    # SGLang's prefill-graph runner passes mrope rows to the text model when this is set; xd_positions handles both
    is_mrope_enabled = True

    def __init__(self, config, quant_config: Optional[QuantizationConfig] = None, prefix: str = "") -> None:
        super().__init__()
        self.config = config
        self.quant_config = quant_config
        tc = _text_config(config)
        self.text_config = tc
        self.pp_group = _pp_group()
        if self.pp_group.world_size > 1:
            raise NotImplementedError("eagle3-plugin's HunYuanVL port does not support pipeline parallelism")
        self.model = HunYuanVLTextModel(tc, quant_config, prefix=add_prefix("model", prefix))
        self.vit = HunYuanVLVisionTransformer(config.vision_config, tc.hidden_size, quant_config,
                                              prefix=add_prefix("vit", prefix))
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings",
                                                getattr(tc, "tie_word_embeddings", True)))
        if self.tie_word_embeddings:
            self.lm_head = self.model.embed_tokens
        else:
            self.lm_head = ParallelLMHead(tc.vocab_size, tc.hidden_size, quant_config=quant_config,
                                          prefix=add_prefix("lm_head", prefix))
        self.logits_processor = LogitsProcessor(tc)
        self.pooler = Pooler(pooling_type=PoolingType.LAST, normalize=True)
        self.capture_aux_hidden_states = False
        self.spatial_merge_size = config.vision_config.spatial_merge_size

    # ---- multimodal plumbing
    def pad_input_ids(self, input_ids, mm_inputs):
        return pad_mm_tokens(input_ids, mm_inputs)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_image_feature(self, items: List[MultimodalDataItem]) -> torch.Tensor:
        pixel_values = torch.cat([item.feature for item in items], dim=0)
        grid = torch.cat([torch.as_tensor(item.image_grid_thw).reshape(-1, 3) for item in items], dim=0)
        return self.vit(pixel_values.to(self.vit.dtype), grid)

    @torch.no_grad()
    def forward(self, input_ids, positions, forward_batch, get_embedding: bool = False, pp_proxy_tensors=None,
                **kwargs):
        hidden_states = general_mm_embed_routine(input_ids=input_ids, forward_batch=forward_batch,
                                                 language_model=self.model, multimodal_model=self,
                                                 positions=positions)
        aux = None
        if self.capture_aux_hidden_states:
            hidden_states, aux = hidden_states
        if get_embedding:
            return self.pooler(hidden_states, forward_batch)
        return self.logits_processor(input_ids, hidden_states, self.lm_head, forward_batch, aux)

    # ---- EAGLE-3
    def get_embed_and_head(self):
        return self.model.embed_tokens.weight, self.lm_head.weight

    def set_eagle3_layers_to_capture(self, layer_ids: Optional[List[int]] = None):
        if not self.pp_group.is_last_rank:
            return
        n = self.text_config.num_hidden_layers
        self.capture_aux_hidden_states = True
        self.model.capture_aux_hidden_states = True
        # SGLang's convention: id i = output of layer i = input of layer i + 1
        self.model.layers_to_capture = [2, n // 2, n - 3] if layer_ids is None else [int(i) + 1 for i in layer_ids]

    # ---- weights
    _HF_TO_HUB = (  # transformers' in-memory names -> Hub checkpoint names
        (re.compile(r"^model\.language_model\."), "model."),
        (re.compile(r"^model\.vision_tower\."), "vit."),
        (re.compile(r"^vision_tower\."), "vit."),
        (re.compile(r"^model\.vit\."), "vit."),
        (re.compile(r"\.layer_norm1\."), ".input_layernorm."),
        (re.compile(r"\.layer_norm2\."), ".post_attention_layernorm."),
        (re.compile(r"\.mlp\.fc1\."), ".mlp.dense_h_to_4h."),
        (re.compile(r"\.mlp\.fc2\."), ".mlp.dense_4h_to_h."),
        (re.compile(r"\.patch_merger\.proj_conv\."), ".perceive.proj.0."),
        (re.compile(r"\.patch_merger\.proj_out\."), ".perceive.proj.2."),
        (re.compile(r"\.patch_merger\."), ".perceive."),
    )

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]):
        stacked = [(".qkv_proj", ".q_proj", "q"), (".qkv_proj", ".k_proj", "k"), (".qkv_proj", ".v_proj", "v"),
                   (".gate_up_proj", ".gate_proj", 0), (".gate_up_proj", ".up_proj", 1)]
        params = dict(self.named_parameters(remove_duplicate=False))
        loaded = set()
        for name, w in weights:
            for pat, rep in self._HF_TO_HUB:
                name = pat.sub(rep, name)
            if "rotary_emb.inv_freq" in name or "rotary_emb.cos_cached" in name or "rotary_emb.sin_cached" in name:
                continue
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue
            if name.startswith("vit.") and ".self_attn.o_proj." in name:
                name = name.replace(".self_attn.o_proj.", ".self_attn.proj.")
            for pname, shard, sid in stacked:
                if shard not in name:
                    continue
                target = name.replace(shard, pname)
                if target not in params:
                    continue
                params[target].weight_loader(params[target], w, sid)
                loaded.add(target)
                break
            else:
                if name not in params:
                    log.warning("eagle3-plugin HunYuanVL: ignoring unknown weight %s", name)
                    continue
                p = params[name]
                getattr(p, "weight_loader", default_weight_loader)(p, w)
                loaded.add(name)
        missing = sorted(set(params) - loaded - ({"lm_head.weight"} if self.tie_word_embeddings else set()))
        if missing:
            log.warning("eagle3-plugin HunYuanVL: %d parameters not in the checkpoint: %s", len(missing),
                        ", ".join(missing[:8]))
        return loaded


EntryClass = [HunYuanVLForConditionalGeneration]


# ==================================================================================================== processor
def xd_rope_positions(input_ids: Sequence[int], image_token_id: int, grids: Sequence[Sequence[int]],
                      merge: int, num_axes: int) -> Tuple[torch.Tensor, int]:
    """HunYuanVLModel.get_rope_index for one sequence: ([num_axes, L] ids, rope delta). Every image placeholder run
    takes the next grid; its merged-grid tokens get (width, height, image index) on the last three axes, the
    begin/end tokens of the run and all text keep the running index on every axis."""
    ids = torch.as_tensor(list(input_ids), dtype=torch.long)
    length = ids.numel()
    pos = torch.arange(length, dtype=torch.long).view(1, -1).expand(num_axes, -1).clone()
    mask = (ids == image_token_id).tolist()
    runs, i = [], 0
    while i < length:
        if mask[i]:
            j = i
            while j + 1 < length and mask[j + 1]:
                j += 1
            runs.append((i, j + 1))
            i = j + 1
        else:
            i += 1
    if len(runs) != len(grids):
        raise ValueError(f"HunYuanVL: {len(runs)} image placeholder runs but {len(grids)} images")
    off = num_axes - 3
    for index, ((start, end), (_, gh, gw)) in enumerate(zip(runs, grids)):
        h, w = int(gh) // merge, int(gw) // merge
        n = h * (w + 1)
        if end - start == n + 2:
            start += 1
        elif end - start != n:
            raise ValueError(f"HunYuanVL: image placeholder run of {end - start} tokens, grid implies {n} (+2)")
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w + 1), indexing="ij")
        pos[off, start:start + n] = ww.flatten()
        pos[off + 1, start:start + n] = hh.flatten()
        pos[off + 2, start:start + n] = index
    return pos, int(pos.max().item()) + 1 - length if length else 0


class HunYuanVLMultimodalProcessor(BaseMultimodalProcessor):
    models = [HunYuanVLForConditionalGeneration]

    def __init__(self, hf_config, server_args, _processor, *args, **kwargs):
        super().__init__(hf_config, server_args, _processor, *args, **kwargs)
        tok = self._tokenizer
        self.image_token_id = int(hf_config.image_token_id)
        self.im_start_id = int(getattr(hf_config, "im_start_id", -1))
        self.im_end_id = int(getattr(hf_config, "im_end_id", -1))
        image_tok = tok.convert_ids_to_tokens([self.image_token_id])[0]
        start_tok = tok.convert_ids_to_tokens([self.im_start_id])[0] if self.im_start_id >= 0 else ""
        end_tok = tok.convert_ids_to_tokens([self.im_end_id])[0] if self.im_end_id >= 0 else ""
        # the chat template writes <start><image><end>; HF's processor expands the middle token and insists on the
        # wrappers, so the whole triple is the placeholder SGLang splits prompts on
        self.mm_tokens = MultimodalSpecialTokens(
            image_token=start_tok + image_tok + end_tok,
            image_token_regex=re.compile(re.escape(start_tok) + "(?:" + re.escape(image_tok) + ")+"
                                         + re.escape(end_tok)),
            image_token_id=self.image_token_id).build(_processor)
        rp = _rope_params(_text_config(hf_config))
        self.num_rope_axes = len(rp.get("mrope_section") or []) or 4
        self.merge = int(hf_config.vision_config.spatial_merge_size)

    async def process_mm_data_async(self, image_data, input_text, request_obj=None, *args, **kwargs):
        if not image_data:
            return None
        base = await self.load_mm_data(prompt=input_text, image_data=image_data, multimodal_tokens=self.mm_tokens)
        if hasattr(self, "process_and_combine_mm_data_async"):
            mm_items, input_ids, _ = await self.process_and_combine_mm_data_async(base, self.mm_tokens)
        else:
            mm_items, input_ids, _ = self.process_and_combine_mm_data(base, self.mm_tokens)
        grids = [g for item in mm_items for g in torch.as_tensor(item.image_grid_thw).reshape(-1, 3).tolist()]
        positions, delta = xd_rope_positions(input_ids.tolist(), self.image_token_id, grids, self.merge,
                                             self.num_rope_axes)
        return MultimodalProcessorOutput(
            input_ids=input_ids.tolist(), mm_items=mm_items, im_token_id=self.image_token_id,
            im_start_id=self.im_start_id, im_end_id=self.im_end_id,
            mrope_positions=positions[-3:].contiguous(), mrope_position_delta=torch.tensor([[delta]]))
