"""Benchmark prompts: OpenAI-style chat requests (data-URI media) from a local jsonl or a named dataset.

Local jsonl: the seeds' conversation format (the first user turn is the prompt; media paths relative to the file).
Default: the fixtures shipped with the package that match the target's modality.
Named datasets are the ones the seed benchmarks use; they need the `datasets` package and a reachable hub (or a
local HF cache). On a machine without either, the error says so and names --data as the way out.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

# name -> (HF dataset id, config, split, modality, how to build a prompt from a row)
DATASETS = {
    "mt_bench": ("HuggingFaceH4/mt_bench_prompts", None, "train", "text", lambda r: r["prompt"][0]),
    "gsm8k": ("openai/gsm8k", "main", "test", "text", lambda r: r["question"]),
    "humaneval": ("openai/openai_humaneval", None, "test", "text", lambda r: r["prompt"]),
    "alpaca": ("tatsu-lab/alpaca", None, "train", "text", lambda r: r["instruction"] + ("\n" + r["input"]
                                                                                        if r["input"] else "")),
    "textvqa": ("lmms-lab/textvqa", None, "validation", "image", lambda r: (r["image"], r["question"])),
    "mmstar": ("Lin-Chen/MMStar", None, "val", "image", lambda r: (r["image"], r["question"])),
    "mmmu": ("lmms-lab/MMMU", None, "validation", "image", lambda r: (r["image_1"], r["question"])),
    "omnidocbench": ("opendatalab/OmniDocBench", None, "train", "image",
                     lambda r: (r["image"], "Extract all the text in the document.")),
    "librispeech": ("openslr/librispeech_asr", "clean", "test", "audio",
                    lambda r: (r["audio"], "Detect the language and recognize the speech: <|en|>")),
}


def _png_uri(image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _wav_uri(audio: dict) -> str:
    import soundfile as sf
    buf = io.BytesIO()
    sf.write(buf, audio["array"], audio["sampling_rate"], format="WAV")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def from_jsonl(path: str | Path, n: int | None = None) -> list[list[dict]]:
    """The first user turn of each conversation as a chat request (media as data URIs)."""
    from eagle3_plugin.trainer.data import read_jsonl
    from eagle3_plugin.trainer.regenerate import request_messages
    chats = []
    for conv in read_jsonl(path):
        first_user = next(i for i, m in enumerate(conv.messages) if m["role"] == "user")
        chats.append(request_messages(conv.messages[:first_user + 1], conv.media))
        if n and len(chats) >= n:
            break
    return chats


def fixture_prompts(modality: str, n: int, seed: int = 0) -> list[list[dict]]:
    """n prompts of the target's modality built from the bundled fixtures (the default)."""
    import tempfile
    from eagle3_plugin import fixtures
    from eagle3_plugin.devtools.pipeline import write_jsonl
    with tempfile.TemporaryDirectory() as d:
        return from_jsonl(write_jsonl(Path(d) / "p.jsonl", fixtures.prompt_set(n, modality, seed=seed)))


def from_dataset(name: str, n: int, seed: int = 0) -> list[list[dict]]:
    if name not in DATASETS:
        raise SystemExit(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (or pass --data FILE.jsonl)")
    repo, config, split, modality, build = DATASETS[name]
    try:
        import datasets
        ds = datasets.load_dataset(repo, config, split=split, streaming=True)
        rows = list(ds.shuffle(seed=seed).take(n))
    except Exception as e:  # noqa: BLE001 - no `datasets`, no network, gated repo ...
        raise SystemExit(f"cannot load dataset {name!r} ({repo}): {type(e).__name__}: {str(e)[:300]}\n"
                         f"fix: install `datasets` on a machine that reaches the hub, or pass --data FILE.jsonl "
                         f"in the conversation format") from None
    chats = []
    for r in rows:
        got = build(r)
        if modality == "text":
            chats.append([{"role": "user", "content": got}])
            continue
        media, question = got
        part = ({"type": "image_url", "image_url": {"url": _png_uri(media)}} if modality == "image" else
                {"type": "audio_url", "audio_url": {"url": _wav_uri(media)}})
        chats.append([{"role": "user", "content": [part, {"type": "text", "text": question}]}])
    return chats


def load_prompts(modality: str, n: int, data: str | None = None, dataset: str | None = None,
                 seed: int = 0) -> list[list[dict]]:
    if data and dataset:
        raise SystemExit("give --data or --dataset, not both")
    if dataset:
        return from_dataset(dataset, n, seed)
    if data:
        chats = from_jsonl(data, n)
        if not chats:
            raise SystemExit(f"{data}: no usable conversations")
        return chats
    return fixture_prompts(modality, n, seed)
