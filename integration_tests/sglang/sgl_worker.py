"""TEST SCAFFOLDING: the SGLang side of the integration tests, run as a separate process by ``conftest.py``.

    python sgl_worker.py OUT.json CHECK [CHECK ...]

Installs the torchvision/torchaudio stub (only here, never in pytest's process), sets up SGLang on CPU (sgl_cpu.py),
runs the named checks through SGLang's own code and writes {check: {"ok", "data" | "error", "seconds"}} to OUT.json.
The checks only measure; the pytest files assert on the numbers.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import cpu_stub  # noqa: E402

cpu_stub.install()

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("EAGLE3_SGL_THREADS", "1")))
torch.manual_seed(0)

CHECKS = {}
WORK = Path(os.environ.get("EAGLE3_SGL_WORKDIR") or "/tmp/eagle3-sgl-work")


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def tiny_target(family: str) -> Path:
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    cache = os.environ.get("EAGLE3_CACHE") or REPO / ".cache"
    return cached_tiny_target(family, cache_dir=cache)


def maxdiff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


# ================================================================================================ 1. registration
@check
def plugin_filtered():
    """Only loads SGLang's plugins (run with SGLANG_PLUGINS=someone_else) and reports what got registered."""
    from sglang.srt.plugins import load_plugins
    load_plugins()
    import eagle3_plugin.sglang as ours
    from sglang.srt.models.registry import ModelRegistry
    import sglang.srt.models.qwen2_audio as qa
    return {"register_ran": bool(ours.REPORT.done), "report": [i.name for i in ours.REPORT],
            "registry_has": {n: n in ModelRegistry.models for n in (
                "Eagle3Qwen3VLForCausalLM", "Eagle3HunYuanVLForCausalLM", "Eagle3Qwen2AudioForCausalLM",
                "HunYuanVLForConditionalGeneration")},
            "qwen2_audio_capture": hasattr(qa.Qwen2AudioForConditionalGeneration, "set_eagle3_layers_to_capture")}


@check
def plugin_registration():
    import importlib.metadata as md
    import sgl_cpu
    sgl_cpu.init_sglang()
    from sglang.srt.plugins import load_plugins
    load_plugins()
    load_plugins()                                   # idempotent: a second call does nothing
    import eagle3_plugin.sglang as ours
    ours.register()                                  # and so does a direct second registration
    from eagle3_plugin.families import FAMILIES
    from sglang.srt.models.registry import ModelRegistry
    from sglang.srt.configs import model_config as mcfg
    from sglang.srt.managers import multimodal_processor as mmp
    import sglang.srt.speculative.eagle_worker_v2 as ew
    import sglang.srt.models.qwen2_audio as qa
    from sglang.srt.models.llama_eagle3 import LlamaForCausalLMEagle3

    claimed = sorted({f.draft_architecture for f in FAMILIES.values()} | {"HunYuanVLForConditionalGeneration"})
    resolved = {}
    for arch in claimed:
        cls, name = ModelRegistry.resolve_model_cls([arch])
        resolved[arch] = {"class": f"{cls.__module__}.{cls.__name__}", "name": name,
                          "is_eagle3_draft": issubclass(cls, LlamaForCausalLMEagle3)}
    # SGLang's own config path for the tiny HunyuanOCR target: multimodal, M-RoPE, our model and processor
    from sglang.srt.model_loader.utils import get_model_architecture
    mc = mcfg.ModelConfig(str(tiny_target("hunyuan_vl")))
    cls, _ = get_model_architecture(mc)
    mmp.import_processors("sglang.srt.multimodal.processors")
    proc = mmp.get_mm_processor_cls(mc.hf_config, mc)
    hy = ModelRegistry.models["HunYuanVLForConditionalGeneration"]
    QA = qa.Qwen2AudioForConditionalGeneration
    eps = [e.name for e in md.entry_points(group="sglang.srt.plugins")]
    return {
        "entry_points": eps, "register_ran": bool(ours.REPORT.done),
        "report": {i.name: [i.status, i.reason] for i in ours.full_report()},
        "resolved": resolved,
        "qwen2_audio_methods": {m: hasattr(QA, m) for m in ("set_eagle3_layers_to_capture", "get_embed_and_head")},
        "qwen2_audio_audio_mask": bool(getattr(QA.get_audio_feature, "__eagle3_plugin_wrapped__", False)),
        "hunyuan_methods": {m: hasattr(hy, m) for m in ("set_eagle3_layers_to_capture", "get_embed_and_head",
                                                         "pad_input_ids", "get_image_feature")},
        "hunyuan_in_mm_archs": "HunYuanVLForConditionalGeneration" in mcfg.multimodal_model_archs,
        "hunyuan_model_config": {"is_multimodal": bool(mc.is_multimodal), "model_is_mrope": bool(mc.model_is_mrope),
                                 "model_class": f"{cls.__module__}.{cls.__name__}",
                                 "processor": f"{proc.__module__}.{proc.__name__}" if proc else None},
        "worker_wrapped": bool(getattr(ew.EagleDraftWorker._draft_extend_for_prefill,
                                       "__eagle3_plugin_wrapped__", False)),
        "drafts_in_registry_once": sum(1 for k in ModelRegistry.models if k == "Eagle3Qwen2AudioForCausalLM"),
    }


# ================================================================================================ 2. drafts
def _random_draft(family: str, out: Path, *, architecture=None, draft_vocab=None, extra=None, seed=0):
    """A draft in our checkpoint format (build_draft_config + save_draft) with random values in EVERY tensor."""
    from eagle3_plugin.checkpoint import build_draft_config, expected_shapes, save_draft
    tcfg = json.loads((tiny_target(family) / "config.json").read_text())
    cfg = build_draft_config(tcfg, draft_vocab_size=draft_vocab, extra=extra)
    if architecture:
        cfg["architectures"] = [architecture]
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in expected_shapes(cfg).items():
        if name in ("d2t", "t2d"):
            continue
        if name.endswith("norm.weight"):
            tensors[name] = 1 + 0.2 * torch.randn(shape, generator=g)
        else:
            tensors[name] = torch.randn(shape, generator=g) * (0.5 / shape[-1] ** 0.5 if len(shape) > 1 else 1)
    if cfg["draft_vocab_size"] != cfg["vocab_size"]:
        ids = torch.randperm(cfg["vocab_size"], generator=g)[:cfg["draft_vocab_size"]].sort().values
        tensors["d2t"] = ids - torch.arange(ids.numel())
        t2d = torch.zeros(cfg["vocab_size"], dtype=torch.bool)
        t2d[ids] = True
        tensors["t2d"] = t2d
    save_draft(out, cfg, tensors)
    return cfg


def _target_embedding(family: str) -> torch.Tensor:
    from safetensors import safe_open
    with safe_open(str(tiny_target(family) / "model.safetensors"), "pt") as f:
        key = [k for k in f.keys() if k.endswith("embed_tokens.weight")]
        assert len(key) == 1, key
        return f.get_tensor(key[0]).float()


def _load_sglang_draft(draft_dir: Path, embed: torch.Tensor):
    """SGLang's own path: ModelConfig -> registry -> class(hf_config) -> load_weights(checkpoint items)."""
    from safetensors import safe_open
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.model_loader.utils import get_model_architecture
    import sgl_cpu
    mc = ModelConfig(str(draft_dir), is_draft_model=True)
    cls, _ = get_model_architecture(mc)
    model = cls(mc.hf_config).eval()
    sgl_cpu.nan_fill(model)
    with safe_open(str(draft_dir / "model.safetensors"), "pt") as f:
        model.load_weights([(k, f.get_tensor(k)) for k in f.keys()])
    unwritten = sgl_cpu.nan_params(model)
    model.set_embed(torch.nn.Parameter(embed.clone(), requires_grad=False))   # what the EAGLE worker does
    model.logits_processor = sgl_cpu.RecordingLogits()
    return model, cls, unwritten


def _sglang_draft_forward(model, input_ids, positions, aux, seq_lens, **batch_fields):
    import sgl_cpu
    fb = sgl_cpu.extend_batch(seq_lens, spec_info=type("S", (), {"hidden_states": aux})(), **batch_fields)
    if positions.dim() == 2:
        fb.mrope_positions = positions
        fb.positions = positions[0]
    with torch.no_grad(), sgl_cpu.attention_context():
        model.forward(input_ids, fb.positions, fb)
    hidden, head, aux_out = model.logits_processor.calls[-1]
    dv = int(model.config.draft_vocab_size)
    return torch.nn.functional.linear(hidden, head.weight)[:, :dv], aux_out[0]


def _trainer_forward(draft_dir, embed, input_ids, positions, aux):
    from eagle3_plugin.trainer.draft import Eagle3Draft
    d = Eagle3Draft.from_pretrained(draft_dir, embed).float().eval()
    with torch.no_grad():
        return d.forward_step0(input_ids, aux, positions)


def _mm_inputs(token_id: int, modality: str, offsets):
    from sglang.srt.managers.schedule_batch import Modality, MultimodalDataItem, MultimodalInputs
    mod = Modality[modality]
    attr = {"IMAGE": "im_token_id", "AUDIO": "audio_token_id", "VIDEO": "video_token_id"}[modality]
    return MultimodalInputs(mm_items=[MultimodalDataItem(modality=mod, offsets=list(offsets))], **{attr: token_id})


DRAFT_CASES = {
    # name: (family, architecture override, draft vocab, positions kind, media modality, extra config)
    "text_llama_eagle3": ("text", None, 256, "1d", None, None),
    "qwen3_vl": ("qwen3_vl", None, None, "mrope", "IMAGE", None),
    "hunyuan_vl": ("hunyuan_vl", None, 200, "1d", "IMAGE", None),
    "qwen2_audio": ("qwen2_audio", None, None, "1d", "AUDIO", None),
    "qwen2_audio_norm_before_residual": ("qwen2_audio", None, None, "1d", None, {"norm_before_residual": True}),
    "qwen3_vl_as_llama_eagle3": ("qwen3_vl", "LlamaForCausalLMEagle3", None, "mrope", None, None),
    # the output directory of `eagle3-train train` itself (conftest: sgl_trained_draft), pruned vocab
    "qwen3_vl_trained_by_eagle3_train": ("qwen3_vl", None, "trained", "mrope", "IMAGE", None),
}
# placeholder runs (absolute target positions, inclusive) per request of the 2-request batch [11, 7]
MEDIA_RUNS = [(3, 7), (2, 4)]


def _stock_forward(model, embed, *args, **fields):
    """The same batch through SGLang's stock LlamaForCausalLMEagle3 with the same weights (negative control)."""
    from sglang.srt.models.llama_eagle3 import LlamaForCausalLMEagle3
    import sgl_cpu
    stock = LlamaForCausalLMEagle3(model.config).eval()
    stock.load_state_dict(model.state_dict(), strict=False)
    stock.set_embed(torch.nn.Parameter(embed.clone(), requires_grad=False))
    stock.logits_processor = sgl_cpu.RecordingLogits()
    return _sglang_draft_forward(stock, *args, **fields)[0]


@check
def drafts():
    import sgl_cpu
    sgl_cpu.init_sglang()
    from sglang.srt.plugins import load_plugins
    load_plugins()
    from eagle3_plugin.families import FAMILIES
    torch.set_default_dtype(torch.float32)
    out = {}
    for case, (family, arch, dvocab, pos_kind, media, extra) in DRAFT_CASES.items():
        t0 = time.time()
        if dvocab == "trained":
            ddir = Path(os.environ["EAGLE3_SGL_TRAINED_DRAFT"])
            cfg = json.loads((ddir / "config.json").read_text())
        else:
            ddir = WORK / f"draft-{case}"
            cfg = _random_draft(family, ddir, architecture=arch, draft_vocab=dvocab, extra=extra)
        embed = _target_embedding(family)
        model, cls, unwritten = _load_sglang_draft(ddir, embed)
        H, V = cfg["hidden_size"], cfg["vocab_size"]
        g = torch.Generator().manual_seed(1)
        seq_lens = [11, 7]                      # two requests in one extend batch
        T = sum(seq_lens)
        ids = torch.randint(20, V, (T,), generator=g)
        aux = torch.randn(T, 3 * H, generator=g)
        if pos_kind == "mrope":                 # 3 distinct rows, as for text + an image grid
            base = torch.cat([torch.arange(n) for n in seq_lens])
            positions = torch.stack([base, base + 7 * (base % 3), base + 11 * (base % 2)])
        else:
            positions = torch.cat([torch.arange(n) for n in seq_lens])
        fields, real_ids = {}, ids.clone()
        if media:
            tok = FAMILIES[family].placeholder_token_ids(
                json.loads((tiny_target(family) / "config.json").read_text()))[0]
            mm_inputs, pt = [], 0
            for n, (start, end) in zip(seq_lens, MEDIA_RUNS):
                # the draft's ids are the target's moved left by one; SGLang holds hash sentinels there
                real_ids[pt + start - 1:pt + end] = tok
                ids[pt + start - 1:pt + end] = (1 << 40) + torch.arange(end - start + 1)
                mm_inputs.append(_mm_inputs(tok, media, [(start, end)]))
                pt += n
            fields["mm_inputs"] = mm_inputs
            fields["mm_input_embeds"] = torch.randn(T, H, generator=g) * 3   # what the stock draft would use
        logits, prenorm = _sglang_draft_forward(model, ids, positions, aux, seq_lens, **fields)
        ref_logits, ref_prenorm, pt = [], [], 0
        for n in seq_lens:                      # the trainer's draft forward, one request at a time
            p = positions[..., pt:pt + n]
            p = p[:, None] if p.dim() == 2 else p[None]
            lg, pr = _trainer_forward(ddir, embed, real_ids[None, pt:pt + n], p, aux[None, pt:pt + n])
            ref_logits.append(lg[0])
            ref_prenorm.append(pr[0])
            pt += n
        ref_logits, ref_prenorm = torch.cat(ref_logits), torch.cat(ref_prenorm)
        res = {"class": cls.__name__, "unwritten_params": unwritten,
               "logits_maxdiff": maxdiff(logits, ref_logits), "prenorm_maxdiff": maxdiff(prenorm, ref_prenorm),
               "logits_absmax": float(ref_logits.abs().max()),
               "mrope_enabled": bool(getattr(model.model, "is_mrope_enabled", False)),
               "draft_vocab": int(model.config.draft_vocab_size)}
        if dvocab:
            from safetensors import safe_open
            with safe_open(str(ddir / "model.safetensors"), "pt") as f:
                d2t = f.get_tensor("d2t")
            res["hot_token_id_ok"] = bool(torch.equal(model.hot_token_id, d2t + torch.arange(d2t.numel())))
        if media or (extra or {}).get("norm_before_residual"):
            if media:
                fields["mm_input_embeds"] = fields["mm_input_embeds"].clone()
            res["stock_logits_maxdiff"] = maxdiff(
                _stock_forward(model, embed, ids.clamp(0, V - 1), positions, aux, seq_lens, **fields), ref_logits)
        if pos_kind == "mrope":                 # control: the same draft fed 1-D positions on all three rows
            flat = positions[0].expand(3, -1).clone()
            res["mrope_1d_control_maxdiff"] = maxdiff(
                _sglang_draft_forward(model, ids, flat, aux, seq_lens, **fields)[0], ref_logits)
        if media:
            res["prefill_hook"] = _check_prefill_hook(model, real_ids, ids, seq_lens, fields["mm_inputs"])
        res["seconds"] = round(time.time() - t0, 2)
        out[case] = res
    out["restore_with_prefix"] = _check_restore_with_prefix()
    return out


def _check_prefill_hook(model, real_ids, draft_ids, seq_lens, mm_inputs):
    """The EagleDraftWorker._draft_extend_for_prefill wrapper on a stand-in worker/batch: the target batch's ids
    (before the worker shifts them) get their placeholder ids back and mm_input_embeds is dropped."""
    import types
    from eagle3_plugin.sglang.drafts import wrap_draft_extend_for_prefill
    seen = {}

    def original(self, batch, target_hidden_states, next_token_ids, mm_input_embeds=None, kv_loc_plan=None):
        seen.update(ids=batch.input_ids.clone(), mm_input_embeds=mm_input_embeds)
        return "ran"

    target_ids, pt = [], 0                    # rebuild the target's (unshifted) ids: sentinels at placeholders
    want = []
    for n in seq_lens:
        target_ids.append(torch.cat([torch.tensor([5]), draft_ids[pt:pt + n - 1]]))
        want.append(torch.cat([torch.tensor([5]), real_ids[pt:pt + n - 1]]))
        pt += n
    batch = types.SimpleNamespace(input_ids=torch.cat(target_ids), multimodal_inputs=mm_inputs,
                                  prefix_lens=[0] * len(seq_lens), extend_lens=list(seq_lens), forward_mode=None)
    worker = types.SimpleNamespace(draft_runner=types.SimpleNamespace(model=model))
    ret = wrap_draft_extend_for_prefill(original)(worker, batch, None, None, torch.zeros(1))
    return {"ran": ret == "ran", "ids_restored": bool(torch.equal(seen["ids"], torch.cat(want))),
            "mm_input_embeds_dropped": seen["mm_input_embeds"] is None}


def _check_restore_with_prefix():
    """restore_placeholder_ids on a chunked prefill: request 0 resumes at prefix 10 inside a run at 8..14."""
    from eagle3_plugin.sglang.drafts import restore_placeholder_ids
    mm = [_mm_inputs(77, "IMAGE", [(8, 14)]), None, _mm_inputs(66, "AUDIO", [(0, 1)])]
    ids = torch.full((4 + 3 + 3,), 900, dtype=torch.long)
    got = restore_placeholder_ids(ids, mm, [10, 0, 0], [4, 3, 3], 1, 1000).tolist()
    want = [77, 77, 77, 77] + [900] * 3 + [66, 900, 900]
    return {"ok": got == want, "got": got, "want": want}


class _ReachedDraftRunner(Exception):
    """Raised by the stand-in draft runner: SGLang's method got as far as the draft forward."""


def _real_draft_extend_for_prefill(worker, batch, hidden, next_ids, mm_input_embeds):
    """SGLang's own (wrapped) ``EagleDraftWorker._draft_extend_for_prefill`` on a real ``ScheduleBatch``, up to the
    model-runner boundary: ``ForwardBatch.init_new`` (it needs a full model runner) is replaced for the call by one
    that carries what the method hands it, and the draft runner's forward stops the call. Returns what reached the
    draft forward: the (shifted) input ids and ``forward_batch.mm_input_embeds``."""
    import types
    import sglang.srt.speculative.eagle_worker_v2 as ew

    class _InitNew:
        @staticmethod
        def init_new(b, runner, **kw):
            return types.SimpleNamespace(input_ids=b.input_ids.clone(), forward_mode=b.forward_mode,
                                         mm_input_embeds=None, spec_info=b.spec_info)

    real = ew.ForwardBatch
    ew.ForwardBatch = _InitNew
    try:
        ew.EagleDraftWorker._draft_extend_for_prefill(worker, batch, hidden, next_ids, mm_input_embeds)
    except _ReachedDraftRunner as e:
        fb = e.args[0]
        return {"ids": fb.input_ids, "mm_input_embeds": fb.mm_input_embeds,
                "spec_info": type(fb.spec_info).__name__}
    finally:
        ew.ForwardBatch = real
    raise AssertionError("the draft runner was never reached")


@check
def draft_input_fallback():
    """The fallback of the prefill hook (drafts.wrap_draft_extend_for_prefill) provoked through SGLang's real
    EagleDraftWorker method and ScheduleBatch: a normal batch (control: placeholder ids restored, mm_input_embeds
    dropped), then two batches our hook cannot read (prefix_lens unset; offsets in a flat format), the first twice.
    Measures the warnings logged, the process-wide counter, what reached the draft forward, and doctor's output."""
    import contextlib
    import io
    import logging
    import types
    import sgl_cpu
    sgl_cpu.init_sglang()
    from sglang.srt.plugins import load_plugins
    load_plugins()
    import sglang.srt.speculative.eagle_worker_v2 as ew
    from sglang.srt.managers.schedule_batch import ScheduleBatch
    from sglang.srt.model_executor.forward_batch_info import ForwardMode
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from eagle3_plugin import doctor, fallbacks
    from eagle3_plugin.families import FAMILIES
    before = fallbacks.counts()                 # whatever earlier checks in this process caused (should be none)

    family = "qwen3_vl"
    ddir = WORK / "draft-fallback"
    cfg = _random_draft(family, ddir)
    model, _, _ = _load_sglang_draft(ddir, _target_embedding(family))
    tok = FAMILIES[family].placeholder_token_ids(json.loads((tiny_target(family) / "config.json").read_text()))[0]
    V, H = cfg["vocab_size"], cfg["hidden_size"]

    def runner_forward(fb):
        raise _ReachedDraftRunner(fb)

    worker = ew.EagleDraftWorker.__new__(ew.EagleDraftWorker)   # its __init__ loads a model runner
    worker.draft_runner = types.SimpleNamespace(model=model, canary_manager=None, forward=runner_forward)
    worker.seed_dsa_topk_from_draft_extend = False
    worker.speculative_algorithm = SpeculativeAlgorithm.EAGLE3

    seq_lens, run = [9, 6], [(2, 5), (1, 3)]           # per request, the placeholder run (inclusive)

    def batch(offsets=None, prefix_lens=(0, 0)):
        ids, mm = [], []
        for n, (a, b) in zip(seq_lens, run):
            t = torch.arange(30, 30 + n)
            t[a:b + 1] = (1 << 40) + torch.arange(b - a + 1)     # SGLang's hash sentinels at the placeholders
            ids.append(t)
            mm.append(_mm_inputs(tok, "IMAGE", offsets if offsets is not None else [(a, b)]))
        return ScheduleBatch(reqs=[], input_ids=torch.cat(ids), forward_mode=ForwardMode.EXTEND,
                             multimodal_inputs=mm, prefix_lens=None if prefix_lens is None else list(prefix_lens),
                             extend_lens=list(seq_lens))

    def call(b):
        T = int(b.input_ids.numel())
        return _real_draft_extend_for_prefill(worker, b, torch.randn(T, 3 * H), torch.tensor([7, 8]),
                                              torch.randn(T, H))

    def placeholders_restored(ids) -> bool:             # the draft's ids are the target's moved left by one
        pt, ok = 0, True
        for n, (a, b) in zip(seq_lens, run):
            ok &= bool((ids[pt + a - 1:pt + b] == tok).all())
            pt += n
        return ok

    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append({"logger": record.name, "level": record.levelname, "message": record.getMessage()})

    handler = Collect(level=logging.WARNING)
    logging.getLogger("sglang").addHandler(handler)
    out = {"counts_before": before, "steps": {}}
    try:
        for name, b in (("control", batch()),
                        ("prefix_lens_unset", batch(prefix_lens=None)),
                        ("prefix_lens_unset_again", batch(prefix_lens=None)),
                        ("flat_offsets", batch(offsets=[1, 3]))):
            n_logged = len(records)
            got = call(b)
            out["steps"][name] = {
                "placeholders_restored": placeholders_restored(got["ids"]),
                "ids_in_vocab": bool((got["ids"] < V).all()),
                "mm_input_embeds_reached_draft": got["mm_input_embeds"] is not None,
                "spec_info": got["spec_info"],
                "warnings": records[n_logged:], "total": fallbacks.total(fallbacks.SGLANG_DRAFT_INPUTS)}
    finally:
        logging.getLogger("sglang").removeHandler(handler)
    out["counts"] = fallbacks.counts()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        doctor.run(["sglang"])
    out["doctor"] = buf.getvalue()
    out["state_dir"] = str(fallbacks.state_dir())
    return out


# ================================================================================================ 3. targets
def _run_target(model, ids, positions, fb):
    import sgl_cpu
    model.logits_processor = sgl_cpu.RecordingLogits()
    holder = model.language_model if hasattr(model, "language_model") else model
    holder.logits_processor = model.logits_processor
    with torch.no_grad(), sgl_cpu.attention_context():
        model.forward(ids.clone(), positions, fb)
    return holder.logits_processor.calls[-1]


def _load_sglang_target(path: Path):
    from safetensors import safe_open
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.model_loader.utils import get_model_architecture
    import sgl_cpu
    mc = ModelConfig(str(path))
    cls, _ = get_model_architecture(mc)
    model = cls(mc.hf_config).eval()
    sgl_cpu.nan_fill(model)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        model.load_weights([(k, f.get_tensor(k).float()) for k in f.keys()])
    return mc, model, sgl_cpu.nan_params(model)


def _sglang_mm_request(mc, out, model):
    """Processor output -> SGLang's MultimodalInputs, padded ids and extend M-RoPE ids, as the scheduler builds them."""
    from array import array
    from sglang.srt.managers.schedule_batch import MultimodalInputs
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch
    import sgl_cpu
    mm = MultimodalInputs.from_processor_output(out)
    ids = torch.tensor(list(model.pad_input_ids(array("q", out.input_ids), mm)))
    T = ids.numel()
    mrope = None
    if mc.model_is_mrope:
        holder = sgl_cpu.PermissiveBatch(seq_lens_cpu=torch.tensor([T]))
        batch = sgl_cpu.PermissiveBatch(multimodal_inputs=[mm], extend_lens=[T], prefix_lens=[0],
                                        reqs=[sgl_cpu.PermissiveBatch()])
        ForwardBatch._compute_mrope_positions_extend(holder, sgl_cpu.PermissiveBatch(device="cpu"), batch)
        mrope = holder.mrope_positions
    return mm, ids, mrope


def _processor(mc, path):
    import sgl_cpu
    from sglang.srt.managers.multimodal_processor import get_mm_processor_cls, import_processors
    from transformers import AutoProcessor
    import_processors("sglang.srt.multimodal.processors")
    hf_proc = AutoProcessor.from_pretrained(str(path))
    return get_mm_processor_cls(mc.hf_config, mc)(mc.hf_config, sgl_cpu.SERVER_ARGS, hf_proc, None), hf_proc


AUX_IDS = [1, 3, 4]   # SGLang convention (eagle_config): output of layer i == HF hidden_states[i + 1]


def _trainer_features(path, inputs, aux):
    """What our trainer trains the draft on (trainer/target.py, vLLM-convention ids = SGLang ids + 1) against what
    SGLang's target hands its EAGLE worker (the concatenated aux states) and its draft positions."""
    from eagle3_plugin.trainer.target import Target
    feats = Target(path).features(dict(inputs), [i + 1 for i in AUX_IDS])
    T = inputs["input_ids"].shape[1]
    return {"trainer_aux_maxdiff": maxdiff(torch.cat(aux, dim=-1), feats.aux[0]),
            "trainer_positions_are_running_index": bool(torch.equal(feats.positions[0], torch.arange(T)))}


@check
def hunyuan_vl_target():
    import asyncio
    import sgl_cpu
    sgl_cpu.init_sglang()
    from sglang.srt.plugins import load_plugins
    load_plugins()
    from sglang.srt.managers.mm_schedule import init_mm_embedding_cache
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from eagle3_plugin import fixtures
    from transformers import HunYuanVLForConditionalGeneration as HF
    torch.set_default_dtype(torch.float32)
    init_mm_embedding_cache(64 << 20)
    path = tiny_target("hunyuan_vl")
    mc, model, unwritten = _load_sglang_target(path)
    proc, hf_proc = _processor(mc, path)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read the receipt."}]}]
    text = hf_proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    image = fixtures.load_image()
    out = asyncio.run(proc.process_mm_data_async(image_data=[image], input_text=text, request_obj=None))
    mm, ids, mrope = _sglang_mm_request(mc, out, model)
    T = ids.numel()
    model.set_eagle3_layers_to_capture(AUX_IDS)
    fb = sgl_cpu.extend_batch([T], mm_inputs=[mm], mrope_positions=mrope, spec_algorithm=SpeculativeAlgorithm.EAGLE3)
    hidden, head, aux = _run_target(model, ids, fb.positions, fb)
    V = mc.hf_config.text_config.vocab_size
    logits = hidden @ head.weight[:V].T
    mm_embeds_set = fb.mm_input_embeds is not None
    # negative control: the same request with plain 1-D RoPE (no XD-RoPE rows)
    fb1 = sgl_cpu.extend_batch([T], mm_inputs=[mm], mrope_positions=None,
                               spec_algorithm=SpeculativeAlgorithm.EAGLE3)
    hidden1, _, _ = _run_target(model, ids, fb1.positions, fb1)

    hf = HF.from_pretrained(str(path), dtype=torch.float32).eval()
    inputs = hf_proc(text=[text], images=[image], return_tensors="pt")
    with torch.no_grad():
        ref = hf(**inputs, output_hidden_states=True)
    pos_hf, delta = hf.model.get_rope_index(inputs["input_ids"], inputs["mm_token_type_ids"], inputs["image_grid_thw"])
    embed, head_w = model.get_embed_and_head()
    trainer = _trainer_features(path, inputs, aux)
    return {
        **trainer,
        "unwritten_params": unwritten, "num_tokens": T,
        "num_image_tokens": int((torch.tensor(out.input_ids) == mc.hf_config.image_token_id).sum()),
        "input_ids_equal_hf": inputs["input_ids"][0].tolist() == out.input_ids,
        "xd_positions_equal_hf": bool(torch.equal(pos_hf[1:, 0], out.mrope_positions)
                                      and torch.equal(pos_hf[0, 0], torch.arange(T))),
        "rope_delta": [int(out.mrope_position_delta.item()), int(delta.item())],
        "logits_maxdiff": maxdiff(logits, ref.logits[0]), "logits_absmax": float(ref.logits.abs().max()),
        "logits_maxdiff_1d_rope_control": maxdiff(hidden1 @ head.weight[:V].T, ref.logits[0]),
        "aux_maxdiff": [maxdiff(a, ref.hidden_states[i + 1][0]) for a, i in zip(aux, AUX_IDS)],
        "aux_maxdiff_wrong_layer_control": maxdiff(aux[0], ref.hidden_states[AUX_IDS[0]][0]),
        "mm_input_embeds_set": mm_embeds_set,
        "embed_and_head_shapes": [list(embed.shape), list(head_w.shape)],
    }


@check
def qwen2_audio_target():
    import asyncio
    import sgl_cpu
    sgl_cpu.init_sglang()
    from sglang.srt.plugins import load_plugins
    load_plugins()
    from sglang.srt.managers.mm_schedule import init_mm_embedding_cache
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from eagle3_plugin import fixtures
    from transformers import Qwen2AudioForConditionalGeneration as HF
    torch.set_default_dtype(torch.float32)
    init_mm_embedding_cache(64 << 20)
    path = tiny_target("qwen2_audio")
    mc, model, unwritten = _load_sglang_target(path)
    proc, hf_proc = _processor(mc, path)
    msgs = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "What is said?"}]}]
    text = hf_proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    wav, sr = fixtures.load_audio()
    out = asyncio.run(proc.process_mm_data_async(audio_data=[str(fixtures.path("audio/hello.wav"))],
                                                 input_text=text, request_obj=None))
    mm, ids, _ = _sglang_mm_request(mc, out, model)
    T = ids.numel()
    model.set_eagle3_layers_to_capture(AUX_IDS)
    fb = sgl_cpu.extend_batch([T], mm_inputs=[mm], spec_algorithm=SpeculativeAlgorithm.EAGLE3)
    hidden, head, aux = _run_target(model, ids, fb.positions, fb)
    hf = HF.from_pretrained(str(path), dtype=torch.float32).eval()
    inputs = hf_proc(text=[text], audio=[wav], sampling_rate=sr, return_tensors="pt")
    with torch.no_grad():
        ref = hf(**inputs, output_hidden_states=True)
    V = ref.logits.shape[-1]
    embed, head_w = model.get_embed_and_head()
    audio_pos = (torch.tensor(out.input_ids) == mc.hf_config.audio_token_index)
    trainer = _trainer_features(path, inputs, aux)
    return {
        **trainer,
        "unwritten_params": unwritten, "num_tokens": T, "num_audio_tokens": int(audio_pos.sum()),
        "input_ids_equal_hf": inputs["input_ids"][0].tolist() == out.input_ids,
        "layers_to_capture": list(model.language_model.model.layers_to_capture),
        "logits_maxdiff": maxdiff(hidden @ head.weight[:V].T, ref.logits[0]),
        "logits_absmax": float(ref.logits.abs().max()),
        "aux_maxdiff": [maxdiff(a, ref.hidden_states[i + 1][0]) for a, i in zip(aux, AUX_IDS)],
        "aux_maxdiff_wrong_layer_control": maxdiff(aux[0], ref.hidden_states[AUX_IDS[0]][0]),
        "mm_input_embeds_set": fb.mm_input_embeds is not None,
        "embed_and_head_shapes": [list(embed.shape), list(head_w.shape)],
    }


@check
def qwen3_vl_target():
    """SGLang's native Qwen3-VL (EAGLE-3 capture since 0.5.11): capture at every id, deepstack range included, and
    the draft's M-RoPE rows against the trainer's features for the same image request."""
    import asyncio
    import types
    import sgl_cpu
    sgl_cpu.init_sglang()
    from sglang.srt.plugins import load_plugins
    load_plugins()
    from sglang.srt.managers.mm_schedule import init_mm_embedding_cache
    from sglang.srt.speculative.spec_info import SpeculativeAlgorithm
    from eagle3_plugin import fixtures
    from eagle3_plugin.trainer.target import Target
    torch.set_default_dtype(torch.float32)
    init_mm_embedding_cache(64 << 20)
    path = tiny_target("qwen3_vl")
    mc, model, unwritten = _load_sglang_target(path)
    proc, hf_proc = _processor(mc, path)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read the receipt."}]}]
    text = hf_proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    image = fixtures.load_image()
    req = types.SimpleNamespace(image_data=[image], video_data=None, audio_data=None)
    out = asyncio.run(proc.process_mm_data_async(image_data=[image], input_text=text, request_obj=req))
    mm, ids, mrope = _sglang_mm_request(mc, out, model)
    trainer_ids = [1, 2, 3, 4, 5]                       # deepstack adds after layers 0 and 1 in the tiny target
    model.set_eagle3_layers_to_capture([i - 1 for i in trainer_ids])
    fb = sgl_cpu.extend_batch([ids.numel()], mm_inputs=[mm], mrope_positions=mrope,
                              spec_algorithm=SpeculativeAlgorithm.EAGLE3)
    hidden, head, aux = _run_target(model, ids, mrope, fb)
    inputs = hf_proc(text=[text], images=[image], return_tensors="pt")
    feats = Target(path).features(dict(inputs), trainer_ids)
    H = hidden.shape[-1]
    # a draft trained for vLLM's V2 runner declares no mrope_section, so SGLang's llama_eagle3 keeps the
    # ForwardBatch positions, which ForwardBatch.init_new computes with compute_position (the CPU path)
    from sglang.srt.model_executor.forward_batch_info import compute_position_torch
    from eagle3_plugin.trainer.target import served_positions
    running, _ = compute_position_torch(torch.tensor([0]), torch.tensor([ids.numel()]))
    return {"unwritten_params": unwritten,
            "draft_running_positions_equal_trainer_v2": bool(torch.equal(running,
                                                                         served_positions(feats, "1d").positions[0])), "input_ids_equal_hf": inputs["input_ids"][0].tolist() == out.input_ids,
            "trainer_aux_maxdiff": {i: maxdiff(aux[j], feats.aux[0, :, j * H:(j + 1) * H])
                                    for j, i in enumerate(trainer_ids)},
            "logits_maxdiff": maxdiff(hidden @ head.weight[:feats.head.shape[0]].T, feats.logits()[0]),
            "draft_mrope_rows_equal_trainer": bool(torch.equal(feats.positions[:, 0], mrope)),
            "mrope_rows_distinct": bool((mrope[1] != mrope[0]).any())}


# ================================================================================================ 4. chat rendering
def _render_cases():
    """tests/render_cases.py: the conversations tests/test_render.py renders (shared module, no pytest/vllm)."""
    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    import render_cases
    return render_cases


def _sgl_media_urls() -> dict:
    """One small PNG and a 0.1 s silent WAV as data URLs, as an OpenAI client sends media."""
    import base64
    import io
    import numpy as np
    import soundfile as sf
    from PIL import Image
    img, wav = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(img, format="PNG")
    sf.write(wav, np.zeros(1600, dtype=np.float32), 16000, format="WAV")
    return {"image": "data:image/png;base64," + base64.b64encode(img.getvalue()).decode(),
            "audio": "data:audio/wav;base64," + base64.b64encode(wav.getvalue()).decode()}


def _sgl_openai_messages(messages, urls) -> list:
    """Our normalised messages as an OpenAI chat request body: bare image/audio parts become image_url/audio_url
    parts (the only media part types SGLang's protocol and process_content_for_template_format accept)."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for p in content:
                kind = p.get("type")
                if kind == "image":
                    parts.append({"type": "image_url", "image_url": {"url": urls["image"]}})
                elif kind == "audio":
                    parts.append({"type": "audio_url", "audio_url": {"url": urls["audio"]}})
                else:
                    parts.append(dict(p))
            content = parts
        out.append({**m, "content": content})
    return out


class _SglTokenizerManager:
    """Stands in for SGLang's TokenizerManager with only what OpenAIServingChat / OpenAIServingTokenize /
    TemplateManager read, filled the way TokenizerManager.init_model_config and init_tokenizer_and_processor
    fill it (managers/tokenizer_manager.py:591-646): SGLang's own ModelConfig, get_processor +
    get_tokenizer_from_processor for a multimodal model (plus its mm processor), get_tokenizer otherwise."""

    def __init__(self, path: str):
        import sgl_cpu
        from sglang.srt.configs.model_config import ModelConfig
        from sglang.srt.managers.multimodal_processor import get_mm_processor, import_processors
        from sglang.srt.utils.hf_transformers.common import get_tokenizer_from_processor
        from sglang.srt.utils.hf_transformers.processor import get_processor
        from sglang.srt.utils.hf_transformers.tokenizer import get_tokenizer
        self.server_args = sgl_cpu.SERVER_ARGS
        self.model_path = self.served_model_name = path
        self.model_config = ModelConfig(path)
        self.max_req_input_len = None
        if self.model_config.is_multimodal:
            import_processors("sglang.srt.multimodal.processors")
            self.processor = get_processor(path, model_name=path)
            self.tokenizer = get_tokenizer_from_processor(self.processor)
            self.mm_processor = get_mm_processor(self.model_config.hf_config, self.server_args, self.processor,
                                                 None, model_config=self.model_config)
        else:
            self.processor = self.mm_processor = None
            self.tokenizer = get_tokenizer(path)

    def config_value(self, name):   # TokenizerManager.config_value: the published server args (no parsers set)
        from sglang.srt.runtime_context import get_context
        return get_context().config_leaf(name)


def _sgl_chat_env(family: str, template):
    """SGLang's serving objects for one target + `--chat-template FILE` (None: the checkpoint's own template),
    built as the HTTP server builds them: TemplateManager.initialize_templates, then OpenAIServingTokenize
    (which holds an OpenAIServingChat). A fresh tokenizer each time: the template manager installs the
    template on it."""
    import types
    from sglang.srt.entrypoints.openai.serving_tokenize import OpenAIServingTokenize
    from sglang.srt.parser.template_manager import TemplateManager
    path = str(tiny_target(family))
    tm = _SglTokenizerManager(path)
    tmpl = TemplateManager()
    tmpl.initialize_templates(tm, model_path=path, chat_template=str(template) if template else None)
    tokenize = OpenAIServingTokenize(tm, tmpl)
    env = types.SimpleNamespace(tm=tm, tmpl=tmpl, tokenize=tokenize, serving=tokenize.chat_serving, seen={})
    serving, tok = env.serving, tm.tokenizer
    render_encode, apply = serving._render_and_encode_chat_template, tok.apply_chat_template

    def recording_render_encode(messages, **kw):     # what SGLang hands the chat template
        env.seen["conv"] = json.loads(json.dumps(messages, default=str))
        return render_encode(messages, **kw)

    def recording_apply(*a, **kw):                    # and the text it renders
        out = apply(*a, **kw)
        if kw.get("tokenize") is False:
            env.seen["prompt"] = out
        return out

    serving._render_and_encode_chat_template = recording_render_encode
    tok.apply_chat_template = recording_apply
    return env


def _sgl_engine_ids(env, gen) -> dict:
    """The prompt ids SGLang's scheduler gets for a GenerateReqInput, before media expansion: its input_ids, or
    for a text prompt (multimodal requests) what the mm processor tokenises -- as TokenizerManager.
    _tokenize_one_request runs it (tokenizer_manager.py:1096-1225) -- with every expanded media run
    (mm_items[*].offsets, inclusive) folded back to its first token."""
    import asyncio
    if gen.input_ids is not None:
        return {"engine": "input_ids", "engine_ids": list(gen.input_ids)}
    tm = env.tm
    for k in ("image_data", "video_data", "audio_data"):
        v = getattr(gen, k)
        if v is not None and not isinstance(v, list):
            setattr(gen, k, [v])
    out = asyncio.run(tm.mm_processor.process_mm_data_async(
        image_data=gen.image_data, audio_data=gen.audio_data, input_text=gen.text, request_obj=gen,
        max_req_input_len=tm.max_req_input_len))
    ids = [int(i) for i in out.input_ids]
    runs = sorted((int(s), int(e)) for item in out.mm_items for s, e in item.offsets)
    drop = {i for s, e in runs for i in range(s + 1, e + 1)}
    return {"engine": "text", "engine_text": gen.text, "engine_ids": [t for i, t in enumerate(ids) if i not in drop],
            "mm_runs": len(runs), "mm_items": len(out.mm_items), "expanded_len": len(ids)}


def _sgl_render(env, messages, kwargs, agp, urls, *, continue_final_message=False) -> dict:
    """One conversation through SGLang's own chat path.

    tokenize_ids: POST /v1/tokenize {"messages", "add_generation_prompt": agp} (OpenAIServingTokenize.
    _tokenize_chat_request: TokenizeRequest.to_chat_completion_request -> OpenAIServingChat._process_messages ->
    _apply_jinja_template), the one SGLang route that renders a conversation without the generation prompt.
    engine_ids: the same request through OpenAIServingChat._convert_to_internal_request (the request a chat
    completion hands the tokenizer manager) and the tokenizer manager's tokenisation (_sgl_engine_ids).
    chat_engine_ids (agp only): a plain POST /v1/chat/completions body (no add_generation_prompt field)."""
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest, TokenizeRequest
    serving = env.serving
    body = {"model": "tiny", "messages": _sgl_openai_messages(messages, urls)}
    if kwargs:
        body["chat_template_kwargs"] = dict(kwargs)
    res, stage = {}, "tokenize"
    try:
        env.seen.clear()
        serving._chat_template_cache.clear()
        if continue_final_message:
            stage = "chat"
            req = ChatCompletionRequest.model_validate({**body, "continue_final_message": True})
            gen, _ = serving._convert_to_internal_request(req)
            res.update(_sgl_engine_ids(env, gen))
            res.update(env.seen)
            return res
        tok_body = {**body, "add_generation_prompt": agp}
        res["tokenize_ids"] = list(env.tokenize._tokenize_chat_request(TokenizeRequest.model_validate(tok_body)))
        res.update(env.seen)
        stage = "engine"
        serving._chat_template_cache.clear()
        req = TokenizeRequest.model_validate(tok_body).to_chat_completion_request()
        if err := serving._validate_request(req):
            raise ValueError(err)
        gen, _ = serving._convert_to_internal_request(req)
        res.update(_sgl_engine_ids(env, gen))
        if agp:
            stage = "chat"
            serving._chat_template_cache.clear()
            req = ChatCompletionRequest.model_validate(body)
            if err := serving._validate_request(req):
                raise ValueError(err)
            gen, _ = serving._convert_to_internal_request(req)
            res["chat_engine_ids"] = _sgl_engine_ids(env, gen)["engine_ids"]
    except Exception as e:  # noqa: BLE001 - SGLang rejects the request: report where and why
        res["error"] = {"stage": stage, "type": type(e).__name__, "message": str(e)[:500]}
    return res


@check
def chat_rendering():
    """SGLang's own chat rendering of every tests/render_cases.py SGLANG_CASES conversation: per target and
    `--chat-template` the content format its TemplateManager detected and the template text it installed; per
    case the messages handed to the template, the prompt text and the ids (_sgl_render). Plus SGLang's
    detect_jinja_template_content_format on every template text we know."""
    import sgl_cpu
    sgl_cpu.init_sglang()
    from sglang.srt.plugins import load_plugins
    load_plugins()                                   # our HunYuanVL processor registers here
    from sglang.srt.managers.mm_schedule import init_mm_embedding_cache
    from sglang.srt.parser.jinja_template_utils import detect_jinja_template_content_format
    init_mm_embedding_cache(64 << 20)
    rc = _render_cases()
    urls = _sgl_media_urls()
    texts = {f"panel:{p.stem}": p.read_text() for p in sorted(rc.TEMPLATES.glob("*.jinja"))}
    texts.update({f"own:{f}": (tiny_target(f) / "chat_template.jinja").read_text() for f in rc.SGLANG_MODELS})
    texts.update({f"probe:{k}": v for k, v in rc.FORMAT_PROBES.items()})
    out = {"detect": {k: detect_jinja_template_content_format(v) for k, v in texts.items()},
           "envs": {}, "cases": {}, "cfm": {}}
    groups: dict = {}
    for c in rc.SGLANG_CASES:
        groups.setdefault((c["model"], c["template"]), []).append(c)
    for (family, tpl), cases in groups.items():
        env = _sgl_chat_env(family, rc.TEMPLATES / f"{tpl}.jinja" if tpl else None)
        out["envs"][f"{family}-{tpl or 'own'}"] = {
            "format": env.tmpl.jinja_template_content_format, "chat_template_name": env.tmpl.chat_template_name,
            "template_text": env.tm.tokenizer.chat_template, "is_multimodal": bool(env.tm.model_config.is_multimodal),
            "auto_adds_specials": bool(env.serving._tokenizer_auto_adds_specials),
            "round_trip_lossy": bool(env.serving._prompt_text_round_trip_is_lossy)}
        for c in cases:
            out["cases"][rc.case_id(c)] = _sgl_render(env, rc.case_messages(c), c["kwargs"], c["agp"], urls)
    for c in rc.SGLANG_CFM_CASES:
        env = _sgl_chat_env(c["model"], rc.TEMPLATES / f"{c['template']}.jinja" if c["template"] else None)
        out["cfm"][rc.case_id(c)] = _sgl_render(env, rc.CONVS[c["conv"]], c["kwargs"], True, urls,
                                                continue_final_message=True)
    return out


def main(argv):
    out_path, names = Path(argv[1]), argv[2:]
    WORK.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        t0 = time.time()
        try:
            results[name] = {"ok": True, "data": CHECKS[name]()}
        except BaseException as e:  # noqa: BLE001 - report, the pytest side fails with the traceback
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}\n{traceback.format_exc()}"}
        results[name]["seconds"] = round(time.time() - t0, 2)
    out_path.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main(sys.argv)
