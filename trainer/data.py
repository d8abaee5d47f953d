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

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from eagle3_plugin.models import model_config, resolve_model

MEDIA_TYPES = {"image": "image", "image_url": "image", "audio": "audio", "audio_url": "audio"}


class DataError(ValueError):
    """A bad line, media file or feature shard: reported with where, what and the fix, skipped and counted.
    `keep`: a conversation that is still used (a warning, such as a repeated id)."""

    def __init__(self, where: str, message: str, fix: str = "", keep: "Conversation | None" = None):
        self.where, self.message, self.fix, self.keep = where, message, fix, keep
        super().__init__(f"{where}: {message}" + (f" — fix: {fix}" if fix else ""))

    def __reduce__(self):          # DataLoader workers send these back to the training process
        return (DataError, (self.where, self.message, self.fix, self.keep))


@dataclass
class Conversation:
    id: str
    messages: list[dict]          # normalised: content is a list of {"type": ..., ...}
    media: list[tuple[str, Path]]  # ("image"|"audio", absolute path) in order of appearance
    where: str                    # "file:line"
    offset: int = 0               # byte offset of the line in its file (stream.py re-reads it from there)

    def prompt_key(self) -> str:
        """sha256 of every non-assistant text and the bytes of every media file: equal for the same prompt."""
        h = hashlib.sha256()
        for m in self.messages:
            if m["role"] != "assistant":
                for p in m["content"]:
                    h.update(f"{m['role']}:{p['type']}:{p.get('text', '')}\0".encode())
        for _, path in self.media:
            h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


@dataclass
class Sample:
    id: str
    input_ids: torch.Tensor       # [T] long, media expanded
    loss_mask: torch.Tensor       # [T] bool: assistant tokens
    mm_inputs: dict = field(default_factory=dict)   # processor outputs besides input_ids/attention_mask
    where: str = ""
    prompt_key: str = ""          # hash of the prompt's text and media bytes (see Conversation.prompt_key)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    @property
    def content_key(self) -> str:
        """What makes two samples the same for splitting: the prompt (text + media), else the tokens."""
        if self.prompt_key:
            return self.prompt_key
        return hashlib.sha256(self.input_ids.numpy().tobytes()).hexdigest()


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


class DataFileError(SystemExit):
    """The data file itself is unusable (missing, a folder): one line on the command line."""


def read_jsonl(path: str | os.PathLike, errors: list[DataError] | None = None) -> Iterator[Conversation]:
    """Yield valid conversations; invalid lines go to `errors` (or raise if errors is None). Lines are decoded one
    by one, so a bad byte costs its line, not the file. A repeated id is reported (and kept: it is another row)."""
    p = Path(path)
    if p.is_dir():
        raise DataFileError(f"{p}: is a folder; give the conversations jsonl file")
    if not p.is_file():
        raise DataFileError(f"{p}: no such data file")
    base = p.parent.resolve()
    seen: dict[str, int] = {}
    offset = 0
    with open(p, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{p}:{lineno}"
            line_offset, offset = offset, offset + len(raw)
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                conv = _parse(line, where, base, lineno)
                conv.offset = line_offset
                if conv.id in seen:
                    raise DataError(where, f"id {conv.id!r} repeats line {seen[conv.id]}; kept, but check the "
                                           f"data for duplicated rows", "give every row its own id",
                                    keep=conv)
                seen[conv.id] = lineno
                yield conv
            except UnicodeDecodeError as e:
                e = DataError(where, f"not UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}",
                              "save the file as UTF-8")
                if errors is None:
                    raise e from None
                errors.append(e)
            except DataError as e:
                if errors is None and e.keep is None:
                    raise
                if errors is not None:
                    errors.append(e)
                if e.keep is not None:
                    yield e.keep


def read_line(path: str | os.PathLike, offset: int, where: str) -> Conversation:
    """The conversation of the line at byte `offset` (indexed before by read_jsonl)."""
    p = Path(path)
    with open(p, "rb") as f:
        f.seek(offset)
        raw = f.readline()
    conv = _parse(raw.decode("utf-8"), where, p.parent.resolve(), int(where.rsplit(":", 1)[1]))
    conv.offset = offset
    return conv


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
        msg = {"role": m["role"], "content": parts}
        if m["role"] == "assistant":
            ids = m.get("token_ids")
            if ids is not None and not (isinstance(ids, list) and all(isinstance(t, int) for t in ids)):
                raise DataError(where, f"conversations[{i}].token_ids must be a list of token ids")
            for key in ("token_ids", "reasoning_content"):
                if m.get(key) is not None:
                    msg[key] = m[key]
        messages.append(msg)
        media += med
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(where, "conversation has no assistant turn: nothing to train on",
                        "regenerate it with `eagle3-train regenerate` or drop the line")
    return Conversation(id=str(row.get("id", lineno)), messages=messages, media=media, where=where)


# ----------------------------------------------------------------------------------------------- tokenising
class Tokenizer:
    """Turns conversations into exactly the token sequences the engine serves (render.ChatRenderer: vLLM's chat
    path by default, SGLang's with engine="sglang"): for each assistant turn, the engine's prompt for the messages
    before it (with the generation prompt) followed by the tokens the target generated (the ``token_ids`` that
    `eagle3-train regenerate` stores, else the answer as the template renders it, up to and including the first
    end-of-turn token: the engine generates nothing after it). Consecutive turns share one sample while each prompt
    extends the previous sample; a template that rewrites history (e.g. drops earlier thinking) starts a new one.
    The processor then expands each media placeholder of the prompt, exactly as the serving engine does."""

    def __init__(self, target_path: str | os.PathLike, family, chat_template: str | None = None,
                 chat_template_kwargs: dict | None = None, engine: str = "vllm"):
        from .render import ChatRenderer
        self.family = family
        target_path = resolve_model(target_path)
        cfg = model_config(target_path)
        self.placeholder_ids: set[int] = set(family.placeholder_token_ids(cfg))
        # the family table's placeholders are vLLM's (tests/test_render.py checks them against vLLM's model classes)
        self.renderer = ChatRenderer.from_pretrained(target_path, chat_template=chat_template,
                                                     chat_template_kwargs=chat_template_kwargs, engine=engine,
                                                     placeholders=dict(family.chat_placeholders))
        self.tokenizer = self.renderer.tokenizer
        self.processor = self.renderer.processor if family.modality != "text" else None
        self.stop_ids = _stop_ids(target_path, self.tokenizer)

    def encode(self, conv: Conversation, expand_media: bool = True) -> list[Sample]:
        """The samples of one conversation (usually one; see the class doc). expand_media=False keeps one
        placeholder per media item and skips the processor (the loss-masked tokens are the same)."""
        self.check_media_kinds(conv)
        pieces: list[tuple[list[int], list[bool], list[int]]] = []   # (ids, mask, prompt length) per sample
        ids: list[int] = []
        mask: list[bool] = []
        prompt_len = 0
        for i, m in enumerate(conv.messages):
            if m["role"] != "assistant":
                continue
            if not m.get("token_ids") and not "".join(p.get("text", "") for p in m["content"]).strip():
                if i == len(conv.messages) - 1 and ids:
                    break         # a last turn left to regenerate: the earlier answers still train
                raise DataError(conv.where, f"conversations[{i}]: empty assistant turn: nothing to train on",
                                "regenerate the answers with `eagle3-train regenerate`")
            prompt = self._render_ids(conv, conv.messages[:i], add_generation_prompt=True)
            if ids and prompt[:len(ids)] != ids:       # the template rewrote history: start a new sample
                pieces.append((ids, mask, prompt_len))
                ids, mask = [], []
            answer = self._answer_ids(conv, i, prompt)
            mask += [False] * (len(prompt) - len(ids)) + [True] * len(answer)
            ids, prompt_len = prompt + answer, len(prompt)
        pieces.append((ids, mask, prompt_len))
        return [self._sample(conv, ids, mask, n, k, expand_media) for k, (ids, mask, n) in enumerate(pieces)]

    def check_media_kinds(self, conv: Conversation) -> None:
        """DataError when a conversation carries media this target does not read (checked without rendering)."""
        if conv.media and self.processor is None:
            kinds = sorted({k for k, _ in conv.media})
            raise DataError(conv.where, f"conversation has {'/'.join(kinds)} content but the target is a text "
                                        f"model", "drop media conversations from this target's data")
        wrong = sorted({k for k, _ in conv.media if k != self.family.modality})
        if wrong:
            raise DataError(conv.where, f"conversation has {'/'.join(wrong)} content but this "
                                        f"{self.family.modality} target takes {self.family.modality} only",
                            "give each target the media it reads")

    def _render_ids(self, conv, messages, add_generation_prompt: bool) -> list[int]:
        from .render import ChatTemplateError
        try:
            return self.renderer.prompt_ids(messages, add_generation_prompt=add_generation_prompt)
        except (ChatTemplateError, ValueError) as e:
            raise DataError(conv.where, str(e), "pass --chat-template FILE (the template you serve with)") from None

    def _answer_ids(self, conv, i: int, prompt: list[int]) -> list[int]:
        m = conv.messages[i]
        if m.get("token_ids"):
            return list(m["token_ids"])
        full = self._render_ids(conv, conv.messages[:i + 1], add_generation_prompt=False)
        if full[:len(prompt)] == prompt:
            answer = full[len(prompt):]
        else:                     # the template renders the turn apart from its prompt: the answer text + stop
            text = "".join(p.get("text", "") for p in m["content"])
            answer = self.tokenizer(text, add_special_tokens=False)["input_ids"] + self.stop_ids[:1]
        stop = next((j for j, t in enumerate(answer) if t in self.stop_ids), None)
        return answer[:stop + 1] if stop is not None else answer

    def _sample(self, conv, ids: list[int], mask: list[bool], prompt_len: int, k: int,
                expand_media: bool = True) -> Sample:
        mm_inputs: dict = {}
        n_media = sum(1 for t in ids if t in self.placeholder_ids)
        if n_media and expand_media:
            ids, mask, mm_inputs = self._expand_media(conv, ids, mask, prompt_len, conv.media[:n_media])
        t_ids = torch.tensor(ids, dtype=torch.long)
        t_mask = torch.tensor(mask, dtype=torch.bool)
        if self.placeholder_ids:
            t_mask &= ~torch.isin(t_ids, torch.tensor(sorted(self.placeholder_ids)))
        sid = conv.id if k == 0 else f"{conv.id}#{k}"
        return Sample(sid, t_ids, t_mask, mm_inputs, conv.where, conv.prompt_key() if expand_media else "")

    def _expand_media(self, conv, ids, mask, prompt_len, media):
        """The processor expands each placeholder token of the prompt into the media's tokens (a run of itself).
        It re-tokenises its text, so it gets the prompt only: a rendered text's canonical tokens, which round-trip
        (generated answers may not)."""
        text = self.tokenizer.decode(ids[:prompt_len], skip_special_tokens=False)
        full = self._process(text, conv, media)
        expanded = full.pop("input_ids")[0].tolist()
        full.pop("attention_mask", None)
        head, head_mask = self._align(ids[:prompt_len], mask[:prompt_len], expanded, conv.where)
        tail = len(ids) - prompt_len
        mm_inputs = {}
        for key, v in full.items():      # per-token arrays (mm_token_type_ids) get zeros for the answer tokens
            if torch.is_tensor(v) and v.dim() == 2 and v.shape == (1, len(expanded)):
                v = torch.cat([v, v.new_zeros(1, tail)], dim=1)
            mm_inputs[key] = v
        return head + ids[prompt_len:], head_mask + mask[prompt_len:], mm_inputs

    def _process(self, text: str, conv: Conversation, media) -> dict:
        images = [p for kind, p in media if kind == "image"]
        audios = [p for kind, p in media if kind == "audio"]
        kw: dict = {}
        try:
            if images:
                from PIL import Image
                kw["images"] = [Image.open(p).convert("RGB") for p in images]
            if audios:
                sr = self.processor.feature_extractor.sampling_rate
                kw["audio"] = [_load_audio(p, sr) for p in audios]
                kw["sampling_rate"] = sr
        except Exception as e:  # noqa: BLE001 - corrupt media
            raise DataError(conv.where, f"cannot decode media: {type(e).__name__}: {e}",
                            "check the file; images must be readable by PIL, audio by soundfile") from None
        for p, img in zip(images, kw.get("images", [])):
            self._check_image(conv.where, p, img)
        fe = getattr(self.processor, "feature_extractor", None)
        for p, wav in zip(audios, kw.get("audio", [])):
            _check_audio(conv.where, p, wav, fe.sampling_rate, getattr(fe, "chunk_length", None))
        try:
            return dict(self.processor(text=[text], return_tensors="pt", add_special_tokens=False, **kw))
        except Exception as e:  # noqa: BLE001 - media the processor cannot take (too small, empty audio)
            raise DataError(conv.where, f"the target's processor cannot take this media: {type(e).__name__}: "
                                        f"{str(e).splitlines()[0][:300]}",
                            "check the media size and content against the processor's limits") from None

    def _check_image(self, where: str, path, img) -> None:
        """An image with a side shorter than one image token (patch x merge pixels) is refused: the processor would
        blow it up to its minimum, so nothing in the answer can have been read from it. Larger images below the
        processor's minimum pixel count are upscaled, as the engines do, and kept."""
        ip = getattr(self.processor, "image_processor", None)
        token = int(getattr(ip, "patch_size", 0) or 0) * int(getattr(ip, "merge_size", 1) or 1)
        w, h = img.size
        if token and min(w, h) < token:
            raise DataError(where, f"image {Path(path).name} is {w}x{h} px: a side is shorter than one image token "
                                   f"of this target ({token} px = patch {ip.patch_size} x merge {ip.merge_size})",
                            f"give images at least {token} px on each side, or leave this conversation out")

    def _align(self, ids, mask, expanded, where):
        """Carry the mask through the processor's placeholder expansion (a placeholder -> a run of itself)."""
        out_mask, j = [], 0
        for tok, m in zip(ids, mask):
            if j >= len(expanded) or expanded[j] != tok:
                raise DataError(where, f"the processor's tokens differ from the rendered prompt at token {j}",
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
            raise DataError(where, "the processor's output has extra tokens after the prompt")
        return expanded, out_mask


def _stop_ids(target_path: Path, tokenizer) -> list[int]:
    """Token ids that end a generation: generation_config's eos_token_id(s), then the tokenizer's eos."""
    ids: list[int] = []
    gen = target_path / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        ids += eos if isinstance(eos, list) else [eos] if eos is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(int(i) for i in ids))


SILENCE = 1e-4          # peak amplitude below which a clip holds nothing to transcribe


def _check_audio(where: str, path, wav, sr: int, window_s: float | None) -> None:
    """Empty or silent audio is refused: an answer cannot come from it. So is a clip longer than the target's
    window: its processor would drop the rest, and the answer may come from what it dropped."""
    if len(wav) == 0:
        raise DataError(where, f"audio {Path(path).name} has no samples", "give a clip with sound in it")
    peak = float(abs(wav).max())
    if peak < SILENCE:
        raise DataError(where, f"audio {Path(path).name} is silent (peak amplitude {peak:.1e} over "
                               f"{len(wav)} samples)", "give a clip with sound in it, or leave this conversation out")
    if window_s and len(wav) > window_s * sr:
        raise DataError(where, f"audio {Path(path).name} lasts {len(wav) / sr:.1f} s, longer than the target's "
                               f"{window_s} s window (its processor keeps only the first {window_s} s)",
                        f"split the clip into pieces of at most {window_s} s")


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
    streamed: int | None = None    # streamed data (stream.py): the conversations encoded so far

    def summary(self) -> str:
        s = f"{self.kept}/{self.read} conversations kept"
        if self.streamed is not None:
            s = f"{self.read} conversations" + (f", {self.kept}/{self.streamed} usable of those encoded so far"
                                                  if self.streamed else "")
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
        samples += encode_fitting(conv, tok, max_length, report)
    return samples


def encode_fitting(conv: Conversation, tok: Tokenizer, max_length: int, report: LoadReport) -> list[Sample]:
    """A conversation's samples within max_length; what cannot be used goes to the report (and counts)."""
    try:
        encoded = tok.encode(conv)
    except DataError as e:
        report.errors.append(DataError(conv.where, e.message, e.fix) if not e.where else e)
        return []
    fitting = [s for s in encoded if _fit(s, tok, max_length, conv, report)]
    report.kept += bool(fitting)
    return fitting


def answer_token_counts(conv: Conversation, tok: Tokenizer) -> Counter:
    """The tokens a conversation trains on (its loss-masked tokens), for the draft vocab: the stored generated ids
    up to the stop token when every answer has them (no rendering), else its text-only samples' masked tokens."""
    answers = [m for m in conv.messages if m["role"] == "assistant"]
    c: Counter = Counter()
    if all(m.get("token_ids") for m in answers):
        for m in answers:
            ids = m["token_ids"]
            stop = next((j for j, t in enumerate(ids) if t in tok.stop_ids), None)
            c.update(ids[:stop + 1] if stop is not None else ids)
        return c
    for s in tok.encode(conv, expand_media=False):
        c.update(s.input_ids[s.loss_mask].tolist())
    return c


def _fit(s: Sample, tok: Tokenizer, max_length: int, conv: Conversation, report: LoadReport) -> bool:
    """Truncate a sample to max_length, never inside (or before) a media block; False (reported) if it cannot."""
    if s.num_tokens > max_length:
        media = torch.isin(s.input_ids, torch.tensor(sorted(tok.placeholder_ids) or [-1]))
        last_media = int(media.nonzero().max()) if media.any() else -1
        if last_media >= max_length:
            report.too_long += 1
            report.errors.append(DataError(conv.where, f"{s.num_tokens} tokens with media up to token "
                                           f"{last_media}, over --max-length {max_length}",
                                           "raise --max-length or shrink the media"))
            return False
        n = s.num_tokens
        s.input_ids, s.loss_mask = s.input_ids[:max_length], s.loss_mask[:max_length]
        for key, v in s.mm_inputs.items():
            if torch.is_tensor(v) and v.dim() == 2 and v.shape == (1, n):
                s.mm_inputs[key] = v[:, :max_length]
        report.truncated += 1
    if not s.loss_mask[2:].any():
        report.errors.append(DataError(conv.where, "no assistant token left to train on after truncation"))
        return False
    return True


def token_frequencies(samples: list[Sample]) -> Counter:
    """How often each token is a training target (loss-masked positions only)."""
    c: Counter = Counter()
    for s in samples:
        c.update(s.input_ids[s.loss_mask].tolist())
    return c
