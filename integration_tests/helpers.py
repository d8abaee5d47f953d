"""Test scaffolding shared by the integration tests: tiny targets and drafts, prompts with real media, and a vLLM
engine factory with CPU-friendly settings. Not part of the package."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from eagle3_plugin import fixtures
from eagle3_plugin.checkpoint import build_draft_config, save_draft


CACHE = Path(os.environ.get("EAGLE3_CACHE") or Path(__file__).resolve().parents[1] / ".cache")


def tiny(family: str, **overrides) -> Path:
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    return cached_tiny_target(family, cache_dir=CACHE, **overrides)


def target_config(target: Path) -> dict:
    return json.loads((Path(target) / "config.json").read_text())


def random_draft(target: Path, out: Path, seed: int = 1, const: bool = False, architecture: str | None = None,
                 aux_layer_ids=None, draft_vocab_size: int | None = None, published_layout: bool = False,
                 vllm_runner: str = "v1") -> Path:
    """A draft in our checkpoint format with random weights (const=True zeroes the final norm, so the draft always
    proposes draft id 0). Written with the same writer the trainer uses.
    published_layout=True writes the layout of AngelSlim's released EAGLE-3 drafts instead: architecture
    Eagle3LlamaForCausalLM, no aux layer ids (engines use their defaults), no eagle3_plugin block."""
    from eagle3_plugin.trainer.draft import Eagle3Draft
    if (out / "config.json").exists():
        return out
    tcfg = target_config(target)
    cfg = build_draft_config(tcfg, aux_layer_ids=aux_layer_ids, draft_vocab_size=draft_vocab_size,
                             vllm_runner=vllm_runner)
    if architecture:
        cfg["architectures"] = [architecture]
    if published_layout:
        for key in ("eagle3_plugin", "eagle_aux_hidden_state_layer_ids", "eagle_config"):
            cfg.pop(key)
        cfg["architectures"] = [architecture or "Eagle3LlamaForCausalLM"]
    torch.manual_seed(seed)
    draft = Eagle3Draft(cfg)
    for name, p in draft.named_parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.05)
    if draft_vocab_size and draft_vocab_size < cfg["vocab_size"]:
        draft.set_vocab(torch.arange(draft_vocab_size))
    if const:
        draft.norm.weight.data.zero_()
    save_draft(out, cfg, draft.checkpoint_tensors())
    return out


def final_norm_key(keys) -> str:
    towers = ("visual", "vit", "audio_tower", "vision", "multi_modal_projector")
    cands = [k for k in keys if k.endswith("norm.weight") and ".layers." not in k
             and not any(t in k for t in towers)]
    if len(cands) != 1:
        raise ValueError(f"cannot identify the final text norm among {cands}")
    return cands[0]


def const_target(target: Path, out: Path) -> Path:
    """Copy of a target with its final text norm zeroed: every logit is 0, so greedy always picks token 0."""
    from safetensors.torch import load_file, save_file
    if (out / "config.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(target, tmp)
    sd = load_file(str(tmp / "model.safetensors"))
    sd[final_norm_key(sd)].zero_()
    save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    os.replace(tmp, out)
    return out


QUESTIONS = ["What is written in the image?", "Describe the image briefly.", "Read the text.", "What do you see?"]
AUDIO_QUESTIONS = ["What is said in the audio?", "Transcribe the audio.", "Detect the language and recognize the "
                   "speech: <|en|>", "Describe the sound."]
TEXT_QUESTIONS = ["What is the water cycle?", "Explain a binary search.", "Tell me about bees.",
                  "How do you make tea?"]


def chat_prompts(family: str, n: int = 4) -> list[list[dict]]:
    """OpenAI-style chat messages with data-URI media, as `vllm serve` and `LLM.chat` receive them."""
    out = []
    for i in range(n):
        if family in ("qwen3_vl", "hunyuan_vl"):
            img = fixtures.images()[i % len(fixtures.images())]
            content = [{"type": "image_url", "image_url": {"url": fixtures.data_uri(img)}},
                       {"type": "text", "text": QUESTIONS[i % 4]}]
        elif family == "qwen2_audio":
            wav = fixtures.audio()[i % len(fixtures.audio())]
            content = [{"type": "audio_url", "audio_url": {"url": fixtures.data_uri(wav)}},
                       {"type": "text", "text": AUDIO_QUESTIONS[i % 4]}]
        else:
            content = TEXT_QUESTIONS[i % 4]
        out.append([{"role": "user", "content": content}])
    return out


def generate_inputs(family: str, tokenizer, n: int = 4) -> list[dict]:
    """Raw prompts + multi_modal_data (PIL image / 16 kHz waveform): the LLM.generate path."""
    out = []
    for i in range(n):
        if family in ("qwen3_vl", "hunyuan_vl"):
            img = fixtures.load_image(str(fixtures.images()[i % len(fixtures.images())].relative_to(fixtures.ROOT)))
            msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[i % 4]}]}]
            mm = {"image": img}
        elif family == "qwen2_audio":
            wav = fixtures.load_audio(str(fixtures.audio()[i % len(fixtures.audio())].relative_to(fixtures.ROOT)))
            msgs = [{"role": "user", "content": [{"type": "audio"},
                                                 {"type": "text", "text": AUDIO_QUESTIONS[i % 4]}]}]
            mm = {"audio": wav}
        else:
            msgs, mm = [{"role": "user", "content": TEXT_QUESTIONS[i % 4]}], None
        prompt = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        out.append({"prompt": prompt, **({"multi_modal_data": mm} if mm else {})})
    return out


def make_llm(target: Path, draft: Path | None = None, k: int = 3, **kw):
    """A vLLM CPU engine through the product's own factory (bench.vllm_offline), with test-sized limits."""
    from eagle3_plugin.bench.vllm_offline import make_llm as product_make_llm
    return product_make_llm(target, draft, k=k, **{"max_model_len": 1024, "max_num_seqs": 4, **kw})


def shutdown(llm) -> None:
    from eagle3_plugin.bench.vllm_offline import shutdown as product_shutdown
    product_shutdown(llm)
    del llm


DRAFT_SWAP = "helpers.DraftSwap"     # make_llm(..., worker_extension_cls=DRAFT_SWAP) enables swap_draft


class DraftSwap:
    """vLLM worker extension (worker_extension_cls): load another draft's weights into the running draft model."""

    def eagle3_load_draft(self, path: str) -> int:
        """What vLLM's own draft weight update does (weight_transfer engines after start_draft_weight_update): a
        layerwise reload in checkpoint format, so layers whose weights the CPU backend repacked are re-processed."""
        from safetensors.torch import load_file
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload
        model = self.model_runner.drafter.model
        sd = load_file(os.path.join(path, "model.safetensors"))
        with set_current_vllm_config(self.vllm_config):
            initialize_layerwise_reload(model)
            model.load_weights(sd.items())
            finalize_layerwise_reload(model, self.vllm_config.speculative_config.draft_model_config)
        return len(sd)


def swap_draft(llm, draft: Path) -> None:
    """Serve another draft of the same configuration in a running engine (built with DRAFT_SWAP)."""
    llm.collective_rpc("eagle3_load_draft", args=(str(draft),))
    llm.reset_prefix_cache()     # the draft's KV of cached prompt blocks was written by the previous draft


def spec_counters(llm) -> dict:
    """vLLM's own spec-decode counters (cumulative for this engine)."""
    from eagle3_plugin.bench.vllm_offline import engine_counters
    return engine_counters(llm)


# ------------------------------------------------------------------------------------- pipelines
def pipeline(family: str) -> dict:
    """The product's pipeline (tiny pretrained target -> regenerate via `vllm serve` -> online training), cached
    for the whole test run."""
    from eagle3_plugin.devtools.pipeline import PipelineConfig, run_pipeline
    cfg = PipelineConfig.for_family(family, workdir=str(CACHE / f"pipeline-{family}"))
    return run_pipeline(cfg, cache_dir=str(CACHE))


def heldout_chats(path: Path) -> list[list[dict]]:
    from eagle3_plugin.bench.prompts import from_jsonl
    return from_jsonl(path)
