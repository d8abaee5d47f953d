"""jsonl conversations -> samples: token ids with media expanded, a loss mask on assistant tokens, processor inputs.

Input format (the seeds' / OpenAI content format; plain-string content accepted too; media paths are relative to the
jsonl file's folder):
    {"id": "1", "conversations": [
        {"role": "user", "content": [{"type": "image", "image": "imgs/1.png"}, {"type": "text", "text": "..."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "..."}]}]}

The loss mask marks the tokens of every assistant turn (content and its end-of-turn token), found from the chat
template itself: the character span each assistant turn adds to the rendered conversation, mapped onto tokenizer
offsets, then carried through the processor's media expansion (each placeholder becomes a run of itself). Media
tokens are never in the mask. Bad input raises DataError naming the file, line, field and the fix; the loader skips
that line, keeps going, and reports counts at the end.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

MEDIA_TYPES = {"image": "image", "image_url": "image", "audio": "audio", "audio_url": "audio"}


class DataError(ValueError):
    def __init__(self, where: str, message: str, fix: str = ""):
        self.where, self.message, self.fix = where, message, fix
        super().__init__(f"{where}: {message}" + (f" — fix: {fix}" if fix else ""))


@dataclass
class Conversation:
    id: str
    messages: list[dict]          # normalised: content is a list of {"type": ..., ...}
    media: list[tuple[str, Path]]  # ("image"|"audio", absolute path) in order of appearance
    where: str                    # "file:line"


@dataclass
class Sample:
    id: str
    input_ids: torch.Tensor       # [T] long, media expanded
    loss_mask: torch.Tensor       # [T] bool: assistant tokens
    mm_inputs: dict = field(default_factory=dict)   # processor outputs besides input_ids/attention_mask
    where: str = ""

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())


# ----------------------------------------------------------------------------------------------- reading jsonl
def _normalise_content(content: Any, where: str, i: int, base: Path) -> tuple[list[dict], list]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}], []
    if not isinstance(content, list):
        raise DataError(where, f"conversations[{i}].content must be a string or a list of parts, "
                               f"got {type(content).__name__}")
    parts, media = [], []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or "type" not in part:
            raise DataError(where, f"conversations[{i}].content[{j}] must be an object with a 'type'")
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise DataError(where, f"conversations[{i}].content[{j}].text must be a string")
            parts.append({"type": "text", "text": part["text"]})
        elif kind in MEDIA_TYPES:
            mtype = MEDIA_TYPES[kind]
            ref = part.get(kind) or part.get(mtype)
            if isinstance(ref, dict):
                ref = ref.get("url")
            if not isinstance(ref, str) or not ref:
                raise DataError(where, f"conversations[{i}].content[{j}] has no {mtype} path",
                                f'write {{"type": "{mtype}", "{mtype}": "relative/path"}}')
            if ref.startswith("file://"):
                ref = ref[7:]
            path = (base / ref).resolve() if not os.path.isabs(ref) else Path(ref)
            if not path.exists():
                raise DataError(where, f"conversations[{i}].content[{j}].{mtype}: file not found: {path}",
                                f"paths are relative to the jsonl's folder {base}")
            parts.append({"type": mtype})
            media.append((mtype, path))
        else:
            raise DataError(where, f"conversations[{i}].content[{j}].type {kind!r} is not one of text, image, audio")
    return parts, media


def read_jsonl(path: str | os.PathLike, errors: list[DataError] | None = None) -> Iterator[Conversation]:
    """Yield valid conversations; invalid lines go to `errors` (or raise if errors is None)."""
    p = Path(path)
    base = p.parent.resolve()
    with open(p, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                yield _parse(line, where, base, lineno)
            except DataError as e:
                if errors is None:
                    raise
                errors.append(e)


def _parse(line: str, where: str, base: Path, lineno: int) -> Conversation:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(where, f"malformed JSON at column {e.colno}: {e.msg}", "one JSON object per line") from None
    if not isinstance(row, dict):
        raise DataError(where, "each line must be a JSON object")
    convs = row.get("conversations", row.get("messages"))
    if not isinstance(convs, list) or not convs:
        raise DataError(where, "missing field 'conversations' (a non-empty list of {role, content})")
    messages, media = [], []
    for i, m in enumerate(convs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise DataError(where, f"conversations[{i}].role must be system, user or assistant")
        if "content" not in m:
            raise DataError(where, f"conversations[{i}] has no 'content'")
        parts, med = _normalise_content(m["content"], where, i, base)
        if m["role"] == "assistant" and med:
            raise DataError(where, f"conversations[{i}]: media in an assistant turn is not supported")
        messages.append({"role": m["role"], "content": parts})
        media += med
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(where, "conversation has no assistant turn: nothing to train on",
                        "regenerate it with `eagle3-train regenerate` or drop the line")
    return Conversation(id=str(row.get("id", lineno)), messages=messages, media=media, where=where)


# ----------------------------------------------------------------------------------------------- tokenising
class Tokenizer:
    """Renders and tokenises conversations with the target's own chat template and processor."""

    def __init__(self, target_path: str | os.PathLike, family):
        import transformers
        self.family = family
        self.placeholder_ids: set[int] = set()
        cfg = json.loads((Path(target_path) / "config.json").read_text())
        self.placeholder_ids = set(family.placeholder_token_ids(cfg))
        if family.modality == "text":
            self.processor = None
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(target_path))
        else:
            self.processor = transformers.AutoProcessor.from_pretrained(str(target_path))
            self.tokenizer = self.processor.tokenizer

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        obj = self.processor or self.tokenizer
        return obj.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def assistant_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """Full rendered text and the character span of every assistant turn (from the template itself)."""
        text = self.render(messages)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True) if i else ""
            upto = self.render(messages[:i + 1])
            if not text.startswith(upto) or not upto.startswith(before):
                raise DataError("", "the chat template does not render conversations prefix-consistently, so "
                                    "assistant turns cannot be located", "use a standard template")
            spans.append((len(before), len(upto)))
        return text, spans

    def encode(self, conv: Conversation) -> Sample:
        if conv.media and self.processor is None:
            kinds = sorted({k for k, _ in conv.media})
            raise DataError(conv.where, f"conversation has {'/'.join(kinds)} content but the target is a text "
                                        f"model", "drop media conversations from this target's data")
        text, spans = self.assistant_spans(conv.messages)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        mask = [any(a <= s < b for a, b in spans) for s, _ in offsets]
        mm_inputs: dict = {}
        if conv.media:
            full = self._process(text, conv)
            expanded = full.pop("input_ids")[0].tolist()
            full.pop("attention_mask", None)
            mm_inputs = dict(full)
            ids, mask = self._expand(ids, mask, expanded, conv.where)
        t_ids = torch.tensor(ids, dtype=torch.long)
        t_mask = torch.tensor(mask, dtype=torch.bool)
        if self.placeholder_ids:
            t_mask &= ~torch.isin(t_ids, torch.tensor(sorted(self.placeholder_ids)))
        return Sample(conv.id, t_ids, t_mask, mm_inputs, conv.where)

    def _process(self, text: str, conv: Conversation) -> dict:
        from eagle3_plugin import fixtures  # noqa: F401  (keeps import light for text-only runs)
        images = [p for kind, p in conv.media if kind == "image"]
        audios = [p for kind, p in conv.media if kind == "audio"]
        kw: dict = {}
        try:
            if images:
                from PIL import Image
                kw["images"] = [Image.open(p).convert("RGB") for p in images]
            if audios:
                kw["audio"] = [_load_audio(p, self.processor.feature_extractor.sampling_rate) for p in audios]
                kw["sampling_rate"] = self.processor.feature_extractor.sampling_rate
        except Exception as e:  # noqa: BLE001 - corrupt media
            raise DataError(conv.where, f"cannot decode media: {type(e).__name__}: {e}",
                            "check the file; images must be readable by PIL, audio by soundfile") from None
        return dict(self.processor(text=[text], return_tensors="pt", **kw))

    def _expand(self, ids, mask, expanded, where):
        """Carry the mask through the processor's placeholder expansion (a placeholder -> a run of itself)."""
        out_mask, j = [], 0
        for tok, m in zip(ids, mask):
            if j >= len(expanded) or expanded[j] != tok:
                raise DataError(where, "processor output does not align with the tokenised text",
                                "report this with the sample")
            if tok in self.placeholder_ids:
                run = 0
                while j < len(expanded) and expanded[j] == tok:
                    j, run = j + 1, run + 1
                out_mask += [False] * run
            else:
                out_mask.append(m)
                j += 1
        if j != len(expanded):
            raise DataError(where, "processor output has extra tokens after the text")
        return expanded, out_mask


def _load_audio(path: Path, sr: int):
    import numpy as np
    import soundfile as sf
    wav, file_sr = sf.read(str(path), dtype="float32", always_2d=False)
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    if file_sr != sr:   # linear resampling: good enough for training features, no torchaudio needed
        n = int(round(len(wav) * sr / file_sr))
        wav = np.interp(np.linspace(0, len(wav) - 1, n), np.arange(len(wav)), wav).astype(np.float32)
    return wav


# ----------------------------------------------------------------------------------------------- datasets
@dataclass
class LoadReport:
    read: int = 0
    kept: int = 0
    errors: list[DataError] = field(default_factory=list)
    too_long: int = 0
    truncated: int = 0

    def summary(self) -> str:
        s = f"{self.kept}/{self.read} conversations kept"
        if self.truncated:
            s += f", {self.truncated} truncated to --max-length"
        if self.too_long:
            s += f", {self.too_long} skipped (media beyond --max-length)"
        if self.errors:
            s += f", {len(self.errors)} bad lines skipped"
        return s


def load_samples(path, tok: Tokenizer, max_length: int, report: LoadReport | None = None,
                 progress: bool = True) -> list[Sample]:
    report = report if report is not None else LoadReport()
    from tqdm.auto import tqdm
    samples = []
    convs = list(read_jsonl(path, report.errors))
    report.read += len(convs) + len(report.errors)
    for conv in tqdm(convs, desc=f"tokenising {Path(path).name}", disable=not progress, unit="conv"):
        try:
            s = tok.encode(conv)
        except DataError as e:
            report.errors.append(DataError(conv.where, e.message, e.fix) if not e.where else e)
            continue
        if s.num_tokens > max_length:
            media = torch.isin(s.input_ids, torch.tensor(sorted(tok.placeholder_ids) or [-1]))
            last_media = int(media.nonzero().max()) if media.any() else -1
            if last_media >= max_length:   # never cut inside (or before) a media block
                report.too_long += 1
                report.errors.append(DataError(conv.where, f"{s.num_tokens} tokens with media up to token "
                                               f"{last_media}, over --max-length {max_length}",
                                               "raise --max-length or shrink the media"))
                continue
            s.input_ids, s.loss_mask = s.input_ids[:max_length], s.loss_mask[:max_length]
            report.truncated += 1
        if not s.loss_mask[2:].any():
            report.errors.append(DataError(conv.where, "no assistant token left to train on after truncation"))
            continue
        samples.append(s)
        report.kept += 1
    return samples


def token_frequencies(samples: list[Sample]) -> Counter:
    """How often each token is a training target (loss-masked positions only)."""
    c: Counter = Counter()
    for s in samples:
        c.update(s.input_ids[s.loss_mask].tolist())
    return c
