#!/usr/bin/env python
"""eagle3-train's throughput on one GPU with a target of a real model's sizes: online training, feature dumping
and offline training tokens/s and peak GPU memory, measured side by side in one run (sized for well under 10
minutes on an H200).

    python benchmarks/gpu_train.py                                  # Qwen3-VL-2B-Instruct sizes, cuda
    python benchmarks/gpu_train.py --config my_config.json          # any Qwen3-VL config.json
    python benchmarks/gpu_train.py --device cpu --tiny-sizes        # the same script as a CPU smoke check (< 1 min)

The target: the architecture and sizes of benchmarks/configs/qwen3_vl_2b.json (Qwen/Qwen3-VL-2B-Instruct's
config.json: 28 x 2048 text layers, 24 x 1024 vision blocks, vocab 151936, tied embeddings) with random bf16
weights, saved once under --cache and loaded by the trainer like any checkpoint. No weights are downloaded (the
machines this runs on reach no hub). The tokenizer, chat template and processor are borrowed from the tiny Qwen3-VL
target (eagle3_plugin.devtools.tiny): its ids are all < 151936, so valid in the big vocab; the config's special ids
(image/video placeholders, vision start/end, eos/bos/pad) are remapped by token string to the borrowed tokenizer's
ids, the only change to the shipped config besides --tiny-sizes. The image processor gets Qwen3-VL's real pixel
limits. Throughput of a random-weight target is the real one: the same matrices are multiplied. One change to the
random weights keeps the draft's work real too: the head rows of ids the tokenizer never produces are zero, so the
target's argmax lies in the draft vocab as a trained target's does (silence_unused_rows says why it matters).

The data: image conversations built like the fixtures (a fixture image, resized to --image-side px on its long
side, a question, an answer of --answer-words words from the bundled corpus), written as a seed-format jsonl.

The phases run the trainer's own code: `eagle3_plugin.trainer.loop.train` (a TrainConfig with max_steps = --steps)
online, then `eagle3_plugin.trainer.features.dump_features`, then `train` again from the dumped features
(offline). Tokens/s of the training phases is steady state: the tokens of the steps after the first --warmup ones
over their wall time (step boundaries are synchronised; the trainer's own running figure, which includes the
warm-up steps, is recorded next to it). The dump's tokens/s is its tokens over its wall time minus the target's
load time (writing and checksumming the shards included). Peak memory per phase: torch.cuda.max_memory_allocated
(and reserved) on a GPU, the peak RSS growth on the CPU. Results: --results JSON (date, commit, device, versions,
figures).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import hashlib
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CONFIG = HERE / "configs" / "qwen3_vl_2b.json"
DEFAULT_RESULTS = HERE / "results" / "gpu-train.json"
SMOKE_RESULTS = HERE / "results" / "gpu-train-smoke.json"     # --tiny-sizes: never mistaken for the real figures
BUILD_VERSION = 2          # bump when the built target's layout changes (the cache key includes it)

# Qwen3-VL's (Qwen2 tokenizer's) special ids -> token strings, to remap a real config onto a borrowed tokenizer
QWEN_SPECIAL_IDS = {151643: "<|endoftext|>", 151644: "<|im_start|>", 151645: "<|im_end|>",
                    151646: "<|object_ref_start|>", 151647: "<|object_ref_end|>", 151648: "<|box_start|>",
                    151649: "<|box_end|>", 151650: "<|quad_start|>", 151651: "<|quad_end|>",
                    151652: "<|vision_start|>", 151653: "<|vision_end|>", 151654: "<|vision_pad|>",
                    151655: "<|image_pad|>", 151656: "<|video_pad|>"}
ID_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "bos_token_id",
           "eos_token_id", "pad_token_id")
# Qwen3-VL-2B-Instruct's preprocessor_config.json / video_preprocessor_config.json pixel limits
REAL_IMAGE_SIZE = {"longest_edge": 16777216, "shortest_edge": 65536}
REAL_VIDEO_SIZE = {"longest_edge": 25165824, "shortest_edge": 4096}
# what --tiny-sizes sets (the tiny targets' sizes: 8 layers so the default aux ids (2, 4, 5) are distinct)
TINY_TEXT = dict(hidden_size=128, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                 intermediate_size=256)
TINY_VISION = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, deepstack_visual_indexes=[0, 1])
FULL_DEFAULTS = dict(samples=64, steps=60, offline_steps=60, warmup=5, answer_words=900, image_side=1024)
TINY_DEFAULTS = dict(samples=8, steps=5, offline_steps=5, warmup=1, answer_words=60, image_side=256)
QUESTIONS = ["What is written in the image?", "Describe the image.", "Read the text in this picture.",
             "What do you see?", "Summarise the picture, then tell me a story about it."]


# ------------------------------------------------------------------------------------------------ the target
def shrink(raw: dict) -> dict:
    """--tiny-sizes: the config with the tiny targets' layer sizes (vocab and everything else kept)."""
    raw = json.loads(json.dumps(raw))
    text, vision = raw["text_config"], raw["vision_config"]
    text.update(TINY_TEXT)
    half = TINY_TEXT["head_dim"] // 2           # interleaved M-RoPE sections sum to head_dim / 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    for key in ("rope_scaling", "rope_parameters"):
        if isinstance(text.get(key), dict) and "mrope_section" in text[key]:
            text[key]["mrope_section"] = section
    vision.update(TINY_VISION, out_hidden_size=TINY_TEXT["hidden_size"])
    return raw


def remap_special_ids(raw: dict, tokenizer) -> tuple[dict, dict]:
    """The config's special token ids (top level and text_config) remapped by token string to `tokenizer`'s ids.
    Returns (config, {key: [old, new]}). An id that is not a known Qwen special id must already be the tokenizer's."""
    raw = json.loads(json.dumps(raw))
    vocab = tokenizer.get_vocab()
    changes: dict = {}

    def new_id(old: int, where: str) -> int:
        if old in QWEN_SPECIAL_IDS:
            tok = QWEN_SPECIAL_IDS[old]
            if tok not in vocab:
                raise SystemExit(f"{where}: {tok} (id {old}) is not in the borrowed tokenizer")
            return int(vocab[tok])
        if old >= len(tokenizer):
            raise SystemExit(f"{where}: id {old} is neither a Qwen special id nor in the borrowed tokenizer "
                             f"({len(tokenizer)} tokens)")
        return old

    for prefix, d in (("", raw), ("text_config.", raw.get("text_config", {}))):
        for key in ID_KEYS:
            old = d.get(key)
            if old is None:
                continue
            new = [new_id(o, prefix + key) for o in old] if isinstance(old, list) else new_id(old, prefix + key)
            if new != old:
                d[key] = new
                changes[prefix + key] = [old, new]
    pad = tokenizer.pad_token_id
    for d in (raw, raw.get("text_config", {})):
        if d.get("pad_token_id") is None and pad is not None:
            d["pad_token_id"] = int(pad)
    return raw, changes


def silence_unused_rows(model, n_tokens: int) -> int:
    """Zero the embedding / lm_head rows of the ids >= n_tokens (the borrowed tokenizer never produces them).

    Why: the TTT loss scores a position only where the target's full-vocab argmax is in the draft vocab. A trained
    target's argmax is a token of the data nearly everywhere, which the draft vocab holds; a random target's is
    uniform over all 151936 ids, so most positions (often whole conversations) are not scored, the draft's steps
    drop out of the backward pass and the step gets cheaper than a real one. With these rows at zero their logits
    are 0 and the argmax is always a low id (in the draft vocab, which holds every id the data has and is filled
    with the lowest others). The matrices keep their shapes, so nothing gets cheaper. Returns the rows zeroed."""
    import torch
    weights = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not weights[0]:
        weights.append(head.weight)
    with torch.no_grad():
        for w in weights:
            w[n_tokens:] = 0
    return max(0, int(weights[0].shape[0]) - n_tokens)


def build_target(config_path: Path, tiny_dir: Path, cache: Path, tiny_sizes: bool, device: str,
                 seed: int = 0) -> tuple[Path, dict]:
    """A random-weight bf16 target of `config_path`'s sizes with the tiny target's tokenizer and processor, built
    once into cache/gpu-train/target-<key> (key: the resolved config). Returns (folder, its build record)."""
    import torch
    from transformers import AutoTokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration
    raw = json.loads(Path(config_path).read_text())
    if raw.get("model_type") != "qwen3_vl":
        raise SystemExit(f"{config_path}: model_type {raw.get('model_type')!r}; this benchmark builds Qwen3-VL "
                         f"targets (model_type 'qwen3_vl')")
    if tiny_sizes:
        raw = shrink(raw)
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    raw, changes = remap_special_ids(raw, tok)
    key = hashlib.sha256(json.dumps([raw, BUILD_VERSION, seed], sort_keys=True).encode()).hexdigest()[:12]
    out = cache / "gpu-train" / f"target-{key}"
    record_path = out / "gpu_train_target.json"
    if record_path.exists():
        return out, json.loads(record_path.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t = time.perf_counter()
    cfg = Qwen3VLConfig.from_dict(raw)
    cfg.dtype = torch.bfloat16
    torch.manual_seed(seed)
    built_on = "cuda" if device == "cuda" else "cpu"
    try:
        with torch.device(built_on):
            model = Qwen3VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    except Exception as e:  # noqa: BLE001 - a GPU init problem should not stop the benchmark: build on the CPU
        if built_on == "cpu":
            raise
        print(f"[gpu-train] building on cuda failed ({type(e).__name__}: {e}); building on the CPU")
        built_on = "cpu"
        model = Qwen3VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    unused = silence_unused_rows(model, len(tok))
    model.save_pretrained(str(tmp))
    del model
    gc.collect()
    if built_on == "cuda":
        torch.cuda.empty_cache()
    # tokenizer, chat template, processor, generation config: the tiny target's (ids consistent with the remap)
    for p in tiny_dir.iterdir():
        if p.is_file() and p.name not in ("config.json", "model.safetensors", "tiny_spec.json", ".eagle3-output.json"):
            shutil.copy2(p, tmp / p.name)
    proc_path = tmp / "processor_config.json"
    if proc_path.exists():
        proc = json.loads(proc_path.read_text())
        proc.get("image_processor", {})["size"] = dict(REAL_IMAGE_SIZE)
        proc.get("video_processor", {})["size"] = dict(REAL_VIDEO_SIZE)
        proc_path.write_text(json.dumps(proc, indent=2) + "\n")
    saved = json.loads((tmp / "config.json").read_text())
    record = {"config": str(config_path), "tiny_sizes": tiny_sizes, "params": params,
              "special_ids_remapped": changes, "zeroed_head_rows": unused, "tokenizer_from": str(tiny_dir),
              "tokenizer_size": len(tok),
              "built_on": built_on, "build_s": round(time.perf_counter() - t, 2),
              "text": {k: saved["text_config"].get(k) for k in ("hidden_size", "num_hidden_layers",
                       "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size")},
              "vision": {k: saved["vision_config"].get(k) for k in ("depth", "hidden_size", "intermediate_size",
                         "num_heads", "out_hidden_size", "deepstack_visual_indexes")},
              "tie_word_embeddings": saved.get("tie_word_embeddings")}
    (tmp / "gpu_train_target.json").write_text(json.dumps(record, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out, record


# ------------------------------------------------------------------------------------------------ the data
def write_conversations(path: Path, n: int, answer_words: int, image_side: int, seed: int = 0) -> Path:
    """n seed-format image conversations like the fixtures': a fixture image (long side resized to image_side px;
    0 keeps it), a question, and an answer of about answer_words words of the bundled corpus."""
    from PIL import Image
    from eagle3_plugin import fixtures
    rng = random.Random(seed)
    img_dir = path.parent / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images = []
    for src in fixtures.images():
        im = Image.open(src).convert("RGB")
        if image_side and max(im.size) != image_side:
            f = image_side / max(im.size)
            im = im.resize((max(32, round(im.width * f)), max(32, round(im.height * f))), Image.BICUBIC)
        dst = img_dir / f"{src.stem}-{image_side}.png"
        im.save(dst)
        images.append(dst)
    words = fixtures.corpus_text().split()
    rows = []
    for i in range(n):
        start = rng.randrange(max(1, len(words) - answer_words))
        answer = " ".join(words[start:start + answer_words])
        rows.append({"id": f"gpu-train-{i:05d}", "conversations": [
            {"role": "user", "content": [{"type": "image", "image": str(images[i % len(images)])},
                                         {"type": "text", "text": rng.choice(QUESTIONS)}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------------ measuring
def _sync(device: str) -> None:
    import torch
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()


def _rss_gib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


class Memory:
    """Peak memory of one phase: CUDA allocator peaks on a GPU; the peak RSS growth over the phase on Linux."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        import torch
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:                                   # reset VmHWM to the current RSS (Linux)
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except (OSError, AttributeError):
            pass
        self.rss_before = _rss_gib("VmRSS")
        return self

    def __exit__(self, *exc):
        import torch
        gib = 2 ** 30
        self.figures = {"peak_gpu_mem_gib": None, "peak_gpu_reserved_gib": None}
        if self.device == "cuda":
            self.figures = {"peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / gib, 3),
                            "peak_gpu_reserved_gib": round(torch.cuda.max_memory_reserved() / gib, 3)}
        hwm = _rss_gib("VmHWM")
        self.figures["peak_rss_growth_gib"] = (round(hwm - self.rss_before, 3)
                                               if hwm is not None and self.rss_before is not None else None)
        return False


class Probe:
    """Watches one trainer run without changing it: the time of each logged optimizer step with the tokens trained
    so far (wrapping RunLog.step and the loop's batch_loss), and the target's load time (Target.__init__)."""

    def __init__(self, device: str):
        self.device = device
        self.tokens = 0
        self.steps: list[tuple[float, int, dict]] = []      # (time, tokens so far, the trainer's scalars)
        self.load_s = 0.0

    @contextlib.contextmanager
    def watch(self):
        from eagle3_plugin.trainer import loop
        from eagle3_plugin.trainer.log import RunLog
        from eagle3_plugin.trainer.target import Target
        orig_step, orig_loss, orig_init = RunLog.step, loop.batch_loss, Target.__init__
        probe = self

        def step(log, n, scalars):
            _sync(probe.device)
            probe.steps.append((time.perf_counter(), probe.tokens, dict(scalars)))
            return orig_step(log, n, scalars)

        def batch_loss(draft, samples, *a, **kw):
            probe.tokens += sum(int(s.num_tokens) for s in samples)
            return orig_loss(draft, samples, *a, **kw)

        def init(target, *a, **kw):
            t = time.perf_counter()
            orig_init(target, *a, **kw)
            _sync(probe.device)
            probe.load_s += time.perf_counter() - t

        with mock.patch.object(RunLog, "step", step), mock.patch.object(Target, "__init__", init), \
                mock.patch.object(loop, "batch_loss", batch_loss):
            yield self

    def training_figures(self, warmup: int) -> dict:
        """Steady state: the steps after the first `warmup` (at least 1, at most all but the last), timed from the
        end of step `warmup` to the end of the last step. A 1-step run gets the trainer's own figure."""
        if not self.steps:
            raise SystemExit("the trainer logged no step")
        n = len(self.steps)
        if n >= 2:
            w = min(max(warmup, 1), n - 1)                  # steps left out
            (t0, k0, _), (t1, k1, _) = self.steps[w - 1], self.steps[-1]
            measured, tokens, secs = n - w, k1 - k0, t1 - t0
        else:
            w, measured, tokens = 0, 1, self.steps[0][1]
            secs = tokens / self.steps[0][2]["tokens_per_s"]
        last = self.steps[-1][2]
        return {"steps": n, "warmup_steps": w, "measured_steps": measured, "tokens": self.steps[-1][1],
                "measured_tokens": tokens, "tokens_per_s": tokens / secs if secs > 0 else float("nan"),
                "step_ms": 1000 * secs / measured, "trainer_tokens_per_s": last["tokens_per_s"],
                "final_loss": last["loss"], "target_load_s": round(self.load_s, 2),
                # a step whose loss is 0 scored no position: its backward pass skips the draft (see
                # silence_unused_rows); there should be none
                "steps_without_scored_tokens": sum(1 for _, _, sc in self.steps if sc["loss"] == 0.0)}


# ------------------------------------------------------------------------------------------------ phases
def train_phase(name: str, cfg, device: str, warmup: int) -> dict:
    """One `train(cfg)` run, watched. Its one evaluation and state save come after the last step's log."""
    from eagle3_plugin.trainer.loop import train
    print(f"[gpu-train] {name}: {cfg.max_steps} steps")
    probe = Probe(device)
    t = time.perf_counter()
    with Memory(device) as mem, probe.watch():
        result = train(cfg)
    _sync(device)
    out = {**probe.training_figures(warmup), "wall_s": round(time.perf_counter() - t, 2), **mem.figures,
           "trained_steps": result["steps"]}
    return out


def dump_phase(target: Path, data: Path, out: Path, max_length: int, device: str) -> dict:
    from eagle3_plugin.families import family_for_target
    from eagle3_plugin.models import model_config
    from eagle3_plugin.trainer.data import LoadReport, Tokenizer, load_samples
    from eagle3_plugin.trainer.features import dump_features
    tcfg = model_config(target)
    fam = family_for_target(tcfg)
    aux = list(fam.aux_layer_ids(tcfg, None))
    t = time.perf_counter()
    report = LoadReport()
    samples = load_samples(data, Tokenizer(target, fam), max_length, report, progress=False)
    tokenize_s = time.perf_counter() - t
    tokens = sum(s.num_tokens for s in samples)
    print(f"[gpu-train] dump-features: {len(samples)} samples, {tokens} tokens")
    probe = Probe(device)
    t = time.perf_counter()
    with Memory(device) as mem, probe.watch():
        dump_features(target, samples, out, aux, progress=False, data=str(data), max_length=max_length,
                      device=device, overwrite=True)
    _sync(device)
    wall = time.perf_counter() - t
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    work = wall - probe.load_s
    return {"samples": len(samples), "tokens": tokens, "tokens_per_s": tokens / work if work > 0 else float("nan"),
            "tokens_per_s_with_load": tokens / wall, "wall_s": round(wall, 2), "target_load_s": round(probe.load_s, 2),
            "tokenize_s": round(tokenize_s, 2), "disk_bytes": disk, "bytes_per_token": round(disk / tokens, 1),
            "aux_layer_ids": aux, **mem.figures}


# ------------------------------------------------------------------------------------------------ report
def _git_commit() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def _device_info(device: str) -> dict:
    import torch
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                "memory_gib": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def _versions() -> dict:
    import torch
    import transformers
    try:
        from importlib.metadata import version
        plugin = version("eagle3-plugin")
    except Exception:  # noqa: BLE001
        plugin = None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "eagle3_plugin": plugin}


def _fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def print_table(res: dict) -> None:
    rows = [("online training", res["online_train"]), ("feature dump", res["dump_features"])]
    if res.get("offline_train"):
        rows.append(("offline training", res["offline_train"]))
    mem = "peak GPU GiB" if res["device"]["type"] == "cuda" else "peak RSS+ GiB"
    print(f"\n[gpu-train] {res['target']['label']} on {res['device']['name']} "
          f"(torch {res['versions']['torch']}, transformers {res['versions']['transformers']}, "
          f"commit {res['commit']})")
    print(f"{'phase':<18}{'tokens':>10}{'tokens/s':>12}{'ms/step':>10}{mem:>15}{'load s':>9}{'wall s':>9}")
    for label, r in rows:
        peak = r["peak_gpu_mem_gib"] if res["device"]["type"] == "cuda" else r["peak_rss_growth_gib"]
        toks = r.get("measured_tokens", r["tokens"])
        print(f"{label:<18}{toks:>10}{_fmt(r['tokens_per_s'], '.0f'):>12}{_fmt(r.get('step_ms'), '.1f'):>10}"
              f"{_fmt(peak, '.2f'):>15}{_fmt(r['target_load_s'], '.1f'):>9}{_fmt(r['wall_s'], '.1f'):>9}")
    print("(training: steady state after the warm-up steps; dump: wall time minus the target's load)")
    for label, r in rows:
        if r.get("steps_without_scored_tokens"):
            print(f"warning: {label}: {r['steps_without_scored_tokens']} steps scored no token (their backward pass "
                  f"skips the draft, so tokens/s is too high)")


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="eagle3-train's online training, feature dump and offline training "
                                            "throughput and peak memory on one GPU, with a target of Qwen3-VL-2B's "
                                            "sizes (random weights)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="default cuda")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="a Qwen3-VL config.json: the target's sizes "
                                                              f"(default {DEFAULT_CONFIG.relative_to(REPO)})")
    p.add_argument("--tiny-sizes", action="store_true",
                   help="shrink the config's layers to the tiny targets' sizes (a CPU smoke check of this script)")
    p.add_argument("--results", help=f"results JSON to write (default {DEFAULT_RESULTS.relative_to(REPO)}; "
                                     f"{SMOKE_RESULTS.relative_to(REPO)} with --tiny-sizes)")
    p.add_argument("--cache", default=None, help="where the built target and the tiny tokenizer live "
                                                 "(default: $EAGLE3_CACHE or ~/.cache/eagle3-plugin)")
    p.add_argument("--workdir", default=None, help="data, features and drafts of this run (default: a folder in "
                                                   "--cache, deleted at the end unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the run's data, features and drafts")
    p.add_argument("--samples", type=int, help=f"conversations (default {FULL_DEFAULTS['samples']}; "
                                               f"{TINY_DEFAULTS['samples']} with --tiny-sizes)")
    p.add_argument("--steps", type=int, help=f"online training steps (default {FULL_DEFAULTS['steps']}; "
                                             f"{TINY_DEFAULTS['steps']} with --tiny-sizes)")
    p.add_argument("--offline-steps", type=int, help="offline training steps; 0 skips offline training "
                                                     f"(default {FULL_DEFAULTS['offline_steps']}; "
                                                     f"{TINY_DEFAULTS['offline_steps']} with --tiny-sizes)")
    p.add_argument("--warmup", type=int, help="training steps left out of the steady-state tokens/s "
                                              f"(default {FULL_DEFAULTS['warmup']}; {TINY_DEFAULTS['warmup']} "
                                              f"with --tiny-sizes)")
    p.add_argument("--answer-words", type=int, help="words per answer (default "
                                                    f"{FULL_DEFAULTS['answer_words']}; "
                                                    f"{TINY_DEFAULTS['answer_words']} with --tiny-sizes)")
    p.add_argument("--image-side", type=int, help="long side of the images in px; 32 px per image token each way "
                                                  f"(default {FULL_DEFAULTS['image_side']}: 640 image tokens for a "
                                                  f"8:5 fixture; {TINY_DEFAULTS['image_side']} with --tiny-sizes)")
    p.add_argument("--max-length", type=int, default=4096, help="tokens per conversation (TrainConfig.max_length; "
                                                                    "default 4096)")
    p.add_argument("--batch-size", type=int, default=1, help="conversations per optimizer step (default 1)")
    p.add_argument("--ttt-steps", type=int, default=7, help="TTT unroll (default 7)")
    p.add_argument("--draft-vocab-size", type=int, default=32000, help="default 32000")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    args = p.parse_args(argv)
    defaults = TINY_DEFAULTS if args.tiny_sizes else FULL_DEFAULTS
    args.results = args.results or str(SMOKE_RESULTS if args.tiny_sizes else DEFAULT_RESULTS)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU is visible to torch here; use --device cpu --tiny-sizes for the "
                         "CPU smoke check")
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    from eagle3_plugin.trainer.config import TrainConfig
    started = _dt.datetime.now(_dt.timezone.utc)
    cache = Path(args.cache or os.environ.get("EAGLE3_CACHE") or Path.home() / ".cache" / "eagle3-plugin")
    t = time.perf_counter()
    tiny = cached_tiny_target("qwen3_vl", cache_dir=cache)
    target, record = build_target(Path(args.config), tiny, cache, args.tiny_sizes, args.device, args.seed)
    prepare_s = time.perf_counter() - t
    tiny_note = " (tiny sizes)" if args.tiny_sizes else ""
    label = f"{Path(args.config).stem}{tiny_note}, {record['params'] / 1e9:.2f}B params"
    print(f"[gpu-train] target {target}: {label}, ready in {prepare_s:.1f} s")

    work = Path(args.workdir) if args.workdir else cache / "gpu-train" / f"run-{os.getpid()}"
    own_work = args.workdir is None
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = write_conversations(work / "data" / "conversations.jsonl", args.samples, args.answer_words,
                                   args.image_side, args.seed)
        common = dict(target=str(target), max_length=args.max_length, batch_size=args.batch_size,
                      ttt_steps=args.ttt_steps, draft_vocab_size=args.draft_vocab_size, seed=args.seed,
                      device=args.device, render_check=0, progress=False, overwrite=True)
        online = train_phase("online training", TrainConfig(output=str(work / "draft-online"), data=str(data),
                                                             max_steps=args.steps, eval_every=args.steps,
                                                             save_every=args.steps, **common),
                             args.device, args.warmup)
        dump = dump_phase(target, data, work / "features", args.max_length, args.device)
        offline = None
        if args.offline_steps:
            offline = train_phase("offline training", TrainConfig(output=str(work / "draft-offline"),
                                                                  features=str(work / "features"),
                                                                  max_steps=args.offline_steps,
                                                                  eval_every=args.offline_steps,
                                                                  save_every=args.offline_steps, **common),
                                  args.device, args.warmup)
    finally:
        if not args.keep:           # the features are GBs at full size; the built target stays cached
            for path in [work] if own_work else [work / n for n in ("features", "draft-online", "draft-offline")]:
                shutil.rmtree(path, ignore_errors=True)

    res = {"date": started.isoformat(timespec="seconds"), "commit": _git_commit(), "device": _device_info(args.device),
           "versions": _versions(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
           "args": vars(args),
           "target": {"label": label, "path": str(target), "prepare_s": round(prepare_s, 2), **record},
           "online_train": online, "dump_features": dump, "offline_train": offline,
           "total_s": round((_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(), 1)}
    print_table(res)
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"[gpu-train] results: {out}")
    return res


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
