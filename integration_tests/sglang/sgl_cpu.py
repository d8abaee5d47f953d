"""TEST SCAFFOLDING, imported only inside the SGLang worker subprocess (after ``cpu_stub.install()``).

Runs SGLang's own model classes on a plain CPU without sgl-kernel, as in SGLang's ``test/layer_ut_utils.py``:
a one-rank gloo "world", published server args, the CPU rotary path, and a stand-in attention backend
(causal SDPA per extend segment, no KV cache) behind SGLang's ``RadixAttention`` via ``forward_context``.
Batches are stand-ins carrying exactly the ForwardBatch fields the model code reads.
"""
from __future__ import annotations

import os
import types

import torch
import torch.nn.functional as F

SERVER_ARGS = None


def init_sglang(**server_args):
    global SERVER_ARGS
    if SERVER_ARGS is not None:
        return SERVER_ARGS
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 2000))
    from sglang.srt.distributed import parallel_state
    from sglang.srt.distributed.parallel_state import init_distributed_environment, initialize_model_parallel
    from sglang.srt.server_args import ServerArgs

    init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo")
    args = dict(model_path="dummy", device="cpu", tp_size=1, pp_size=1, mm_attention_backend="sdpa",
                mm_process_config={})
    args.update(server_args)
    SERVER_ARGS = ServerArgs(**args)
    try:                                    # SGLang >= 0.5.2x: a published runtime context
        from sglang.srt.runtime_context import SpawnRanks, get_parallel, publish, reset_context
    except ImportError:                     # older: global server args
        from sglang.srt.server_args import set_global_server_args_for_scheduler
        set_global_server_args_for_scheduler(SERVER_ARGS)
    else:
        reset_context()
        publish(SERVER_ARGS, role="test", ranks=SpawnRanks(world_rank=0))
        if parallel_state._WORLD is not None:
            get_parallel().override_permanently(world_group=parallel_state._WORLD)
    initialize_model_parallel(backend="gloo")
    import sglang.srt.layers.rotary_embedding.base as rb
    rb._is_cpu = True  # platform-less CPU: use the native rotary instead of vllm._custom_ops
    return SERVER_ARGS


class SDPABackend:
    """Stand-in attention backend: causal SDPA over each request's extend segment (no prefix, no KV cache)."""

    def forward(self, q, k, v, layer, fb, save_kv_cache=True, **kw):
        out = []
        for s, n in zip(fb.extend_start_loc.tolist(), fb.extend_seq_lens.tolist()):
            qq = q[s:s + n].reshape(n, layer.tp_q_head_num, -1).transpose(0, 1)
            kk = k[s:s + n].reshape(n, layer.tp_k_head_num, -1).transpose(0, 1)
            vv = v[s:s + n].reshape(n, layer.tp_v_head_num, -1).transpose(0, 1)
            o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=layer.scaling, enable_gqa=True)
            out.append(o.transpose(0, 1).reshape(n, -1))
        return torch.cat(out)


def attention_context():
    from sglang.srt.model_executor.forward_context import ForwardContext, forward_context
    return forward_context(ForwardContext(attn_backend=SDPABackend()))


class PermissiveBatch(types.SimpleNamespace):
    """A ForwardBatch stand-in: fields not set read as None (SGLang's layer code probes many optional ones)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return None

    def contains_mm_inputs(self):
        return any(m is not None for m in (self.mm_inputs or ()))

    def contains_image_inputs(self):
        return any(m is not None and m.contains_image_inputs() for m in (self.mm_inputs or ()))

    def contains_audio_inputs(self):
        return any(m is not None and m.contains_audio_inputs() for m in (self.mm_inputs or ()))

    def contains_video_inputs(self):
        return any(m is not None and m.contains_video_inputs() for m in (self.mm_inputs or ()))


def extend_batch(seq_lens, **fields) -> PermissiveBatch:
    """An EXTEND batch of len(seq_lens) requests with no cached prefix."""
    from sglang.srt.model_executor.forward_batch_info import ForwardMode
    lens = torch.tensor(list(seq_lens))
    starts = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)[:-1]])
    fb = PermissiveBatch(forward_mode=ForwardMode.EXTEND, batch_size=len(lens), extend_seq_lens=lens,
                         extend_start_loc=starts, extend_seq_lens_cpu=lens.tolist(),
                         extend_prefix_lens_cpu=[0] * len(lens), seq_lens=lens, seq_lens_cpu=lens,
                         positions=torch.cat([torch.arange(n) for n in lens.tolist()]),
                         global_num_token_non_padded_cpu=None, moe_num_token_non_padded=None)
    for k, v in fields.items():
        setattr(fb, k, v)
    return fb


class RecordingLogits(torch.nn.Module):
    """Replaces a model's LogitsProcessor: records what the model hands it (hidden states, lm_head, aux states)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, input_ids, hidden_states, lm_head, forward_batch, aux_hidden_states=None, *a, **k):
        self.calls.append((hidden_states, lm_head, aux_hidden_states))
        return hidden_states


def nan_fill(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))


def nan_params(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.is_floating_point() and torch.isnan(p).any()]
