"""Tiny vision targets (Qwen3-VL, HunyuanOCR) that really read: the answer is decided by the image.

The task: one line of 3-7 characters (lower-case letters or digits) rendered on a 256 x 64 image in a monospace
font at 32 px per character, so each character column is one image token (patch 16 x merge 2, both families);
foreground and background colours, font weight and a 2 px jitter vary. The prompt is one of a few reading questions
through the target's own chat template and processor; the answer is the text.

Held out by construction: evaluation texts are English words and digit strings from their own lists and seed;
the target trained on random strings that never equal an evaluation text (``training_text`` rejects them), its
drafts on those and on English words from the shipped word list, never an evaluation word (``draft_text``); evaluation
renders use other colours' seeds. Every stage is seeded, so a rebuild reproduces the weights on the same machine.

What a task needs beyond its media (`Task`, `Batcher`, `train_target`, `heldout_accuracy`, `write_conversations`) is
shared with the listening task (devtools/listening.py).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..fixtures import ROOT as FIXTURES

FONTS = (FIXTURES / "fonts" / "DejaVuSansMono.ttf", FIXTURES / "fonts" / "DejaVuSansMono-Bold.ttf")
FONT_SIZE = 53                   # DejaVu Sans Mono advances 0.602 em: 53 px -> 32 px per character
SIZE = (256, 64)                 # 8 columns x 2 rows of 32 px image tokens
QUESTIONS = ("Read the text in this picture.", "What is written here?", "Transcribe the image.")
EVAL_WORDS = ("apple", "river", "stone", "green", "light", "house", "water", "bread", "chair", "music", "cloud",
              "sugar", "tiger", "smile", "plant", "dream", "ocean", "train", "honey", "paper", "storm", "table",
              "horse", "quiet", "brick", "lemon", "night", "field", "glass", "north", "cat", "dog", "sun", "map",
              "box", "pen", "cup", "key", "bird", "fish", "tree", "moon", "rain", "snow", "door", "road", "star",
              "wind", "milk", "salt", "garden", "window", "yellow", "orange", "silver", "market", "planet",
              "bridge", "forest", "winter", "kitchen", "morning", "picture", "teacher", "journey")
EVAL_NUMBERS = ("2048", "1999", "31415", "8080", "404", "777", "12345", "90210", "6021", "55512", "3306",
                "24680", "13579", "1066", "4096", "65535", "2718", "16384", "911", "7070")


def eval_texts() -> list[str]:
    return list(EVAL_WORDS + EVAL_NUMBERS)


def training_text(rng: random.Random) -> str:
    """A random string of 3-7 letters (3 in 4) or digits, never an evaluation text."""
    held = set(eval_texts())
    while True:
        n = rng.randint(3, 7)
        alphabet = "abcdefghijklmnopqrstuvwxyz" if rng.random() < 0.75 else "0123456789"
        text = "".join(rng.choice(alphabet) for _ in range(n))
        if text not in held:
            return text


def dictionary_words() -> list[str]:
    """The shipped English words (fixtures/words.txt) that are not evaluation texts."""
    held = set(eval_texts())
    return [w for w in (FIXTURES / "words.txt").read_text().split() if w not in held]


def draft_text(rng: random.Random, words: list[str]) -> str:
    """What a reader's drafts train on: an English word (1 in 2), as documents hold, else a `training_text`."""
    return rng.choice(words) if rng.random() < 0.5 else training_text(rng)


def render(text: str, rng: random.Random):
    """The text on a 256 x 64 image: light background, dark foreground, regular or bold, +-2 px jitter."""
    from PIL import Image, ImageDraw, ImageFont
    bg = tuple(rng.randint(200, 255) for _ in range(3))
    fg = tuple(rng.randint(0, 90) for _ in range(3))
    img = Image.new("RGB", SIZE, bg)
    font = ImageFont.truetype(str(FONTS[rng.random() < 0.3]), FONT_SIZE)
    ImageDraw.Draw(img).text((rng.randint(0, 2), rng.randint(-7, -3)), text, font=font, fill=fg)
    return img


def save_image(img, path: Path) -> None:
    img.save(path)


@dataclass(frozen=True)
class Task:
    """A task whose answer the media decides: what a tiny target learns, and what its drafts are measured on.
    `make(text, rng)` renders or speaks the text; `model_class` is the transformers class that trains it ("": the
    checkpoint's own architecture)."""
    name: str
    media: str                                  # "image" | "audio": the chat content type
    make: Callable[[str, random.Random], Any]
    save: Callable[[Any, Path], None]
    suffix: str
    questions: tuple[str, ...]
    model_class: str


READING = Task("reading", "image", render, save_image, ".png", QUESTIONS, "AutoModelForImageTextToText")


def chat(question: str, media: str = "image") -> list[dict]:
    return [{"role": "user", "content": [{"type": media}, {"type": "text", "text": question}]}]


def end_token_id(target_dir: str | Path) -> int:
    """The token that ends an assistant turn: the target's first generation eos (<|im_end|>, <｜hy_end▁of▁sentence｜>)."""
    from transformers import GenerationConfig
    eos = GenerationConfig.from_pretrained(str(target_dir)).eos_token_id
    return eos[0] if isinstance(eos, (list, tuple)) else eos


class Batcher:
    """Processor inputs with the answer appended (labels on the answer and its end token only). `media`: "image"
    (PIL images) or "audio" (16 kHz float32 waveforms)."""
    TEXT_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")

    def __init__(self, target_dir: str | Path, media: str = "image"):
        from transformers import AutoProcessor
        self.proc = AutoProcessor.from_pretrained(str(target_dir))
        self.tok = self.proc.tokenizer
        self.media = media
        self.end = end_token_id(target_dir)
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.end

    def prompt(self, question: str) -> str:
        return self.proc.apply_chat_template(chat(question, self.media), add_generation_prompt=True, tokenize=False)

    def inputs(self, items, questions) -> dict:
        media = ({"images": list(items)} if self.media == "image" else
                 {"audio": list(items), "sampling_rate": self.proc.feature_extractor.sampling_rate})
        return dict(self.proc(text=[self.prompt(q) for q in questions], return_tensors="pt", padding=True, **media))

    def training_batch(self, items, questions, answers) -> dict:
        """Each row is prompt + answer + end, right-padded as a whole (no padding inside a row, as in serving).
        Rows come grouped by question (one processor call per question)."""
        rows, mm_rows, prompt_lens, media = [], [], [], {}
        for q in dict.fromkeys(questions):
            idx = [i for i, x in enumerate(questions) if x == q]
            enc = self.inputs([items[i] for i in idx], [q] * len(idx))
            for key, value in enc.items():
                if key not in self.TEXT_KEYS:
                    media.setdefault(key, []).append(value)
            for j, i in enumerate(idx):
                answer = self.tok(answers[i], add_special_tokens=False)["input_ids"] + [self.end]
                keep = enc["attention_mask"][j].bool()          # a prompt padded to its group's longest
                prompt_lens.append(int(keep.sum()))
                rows.append(enc["input_ids"][j][keep].tolist() + answer)
                mm_rows.append(enc["mm_token_type_ids"][j][keep].tolist() + [0] * len(answer)
                               if "mm_token_type_ids" in enc else None)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        mask = torch.zeros_like(ids)
        mm = torch.zeros_like(ids)
        for i, (r, n) in enumerate(zip(rows, prompt_lens)):
            ids[i, :len(r)] = torch.tensor(r)
            labels[i, n:len(r)] = ids[i, n:len(r)]
            mask[i, :len(r)] = 1
            if mm_rows[i] is not None:
                mm[i, :len(r)] = torch.tensor(mm_rows[i])
        out = {"input_ids": ids, "attention_mask": mask, "labels": labels,
               **{key: torch.cat(parts) for key, parts in media.items()}}
        if mm_rows[0] is not None:
            out["mm_token_type_ids"] = mm
        return out


def char_accuracy(want: str, got: str) -> float:
    """1 - edit distance / len(want), floored at 0."""
    prev = list(range(len(got) + 1))
    for i, a in enumerate(want, 1):
        cur = [i]
        for j, b in enumerate(got, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return max(0.0, 1 - prev[-1] / max(1, len(want)))


@torch.no_grad()
def read(model, batcher: Batcher, images, questions, max_new_tokens: int = 10) -> list[str]:
    """Greedy answers (transformers generate), decoded without special tokens."""
    batcher.tok.padding_side = "left"            # prompts differ in length (the questions)
    try:
        enc = batcher.inputs(images, questions)
    finally:
        batcher.tok.padding_side = "right"
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=batcher.end,
                         pad_token_id=batcher.pad)
    return [batcher.tok.decode(o[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() for o in out]


def heldout_accuracy(model, batcher: Batcher, seed: int = 99, batch: int = 32, task: Task = READING) -> dict:
    """Exact match and character accuracy on the evaluation texts, each made once (seed `seed`)."""
    rng = random.Random(seed)
    texts = eval_texts()
    items = [task.make(t, rng) for t in texts]
    questions = [task.questions[i % len(task.questions)] for i in range(len(texts))]
    got = []
    for i in range(0, len(texts), batch):
        got += read(model, batcher, items[i:i + batch], questions[i:i + batch])
    acc = [char_accuracy(t, g) for t, g in zip(texts, got)]
    return {"texts": len(texts), "exact": sum(t == g for t, g in zip(texts, got)) / len(texts),
            "char_accuracy": sum(acc) / len(acc), "examples": list(zip(texts, got))[:8]}


def load_model(task: Task, path: str | Path, dtype=torch.float32):
    import json
    import transformers
    name = task.model_class or json.loads((Path(path) / "config.json").read_text())["architectures"][0]
    return getattr(transformers, name).from_pretrained(str(path), dtype=dtype)


def _pool(task: Task, rng: random.Random, n: int) -> list[tuple[str, Any]]:
    """`n` training (text, medium) pairs made up front, two at a time (speech synthesis runs in subprocesses)."""
    from concurrent.futures import ThreadPoolExecutor
    texts = [training_text(rng) for _ in range(n)]
    seeds = [rng.getrandbits(32) for _ in range(n)]
    with ThreadPoolExecutor(2) as ex:
        items = list(ex.map(lambda ts: task.make(ts[0], random.Random(ts[1])), zip(texts, seeds)))
    return list(zip(texts, items))


def train_target(target_dir: str | Path, out_dir: str | Path, task: Task = READING, steps: int = 600,
                 batch: int = 32, lr: float = 2e-3, seed: int = 0, log_every: int = 50, pool_size: int = 0) -> dict:
    """Train every parameter of a tiny media target on `task` and save it (bf16) into `out_dir`. `pool_size`: draw
    batches from that many examples made up front (for media slow to make), else make each batch's anew."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    batcher = Batcher(target_dir, task.media)
    model = load_model(task, target_dir)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = min(100, steps // 5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, max(0, s - warmup) / max(1, steps - warmup)))))
    pool = _pool(task, rng, pool_size) if pool_size else None
    losses = []
    for step in range(steps):
        if pool:
            texts, items = zip(*rng.sample(pool, batch))
        else:
            texts = [training_text(rng) for _ in range(batch)]
            items = [task.make(t, rng) for t in texts]
        inputs = batcher.training_batch(list(items), [rng.choice(task.questions) for _ in texts], list(texts))
        loss = model(**inputs).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"[{task.name}] step {step + 1}/{steps} loss {sum(losses[-log_every:]) / log_every:.4f}", flush=True)
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    batcher.proc.save_pretrained(out)
    for name in ("generation_config.json",):
        src = Path(target_dir) / name
        if src.exists():
            (out / name).write_text(src.read_text())
    return {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "pool": pool_size,
            "final_loss": sum(losses[-20:]) / len(losses[-20:])}


def write_conversations(out_dir: str | Path, split: str, n: int | None = None, seed: int | None = None,
                        first: int | None = None, task: Task = READING) -> Path:
    """OUT/{task}-{split}.jsonl: seed-format prompts (user turn: a render or utterance + a question, empty assistant
    turn to regenerate), each medium a file in OUT/{task}-{split}/ (paths relative to the jsonl, as the trainer reads
    them).

    split "train": `n` draft training texts (`draft_text`, seed 0 by default);
    split "heldout": every evaluation text, made as `heldout_accuracy` makes them (seed 99).
    `first`: only the first items of that set, equal to the full set's (a draft's training media, to measure it on).
    Written once: an existing file is returned as it is."""
    out = Path(out_dir)
    path = out / f"{task.name}-{split}.jsonl"
    if path.exists():
        return path
    if split == "train":
        rng = random.Random(0 if seed is None else seed)
        words = dictionary_words()
        texts = [draft_text(rng, words) for _ in range(n or 240)]
    elif split == "heldout":
        rng = random.Random(99 if seed is None else seed)
        texts = eval_texts()[:n]
    else:
        raise ValueError(f"split {split!r}: use 'train' or 'heldout'")
    media = out / f"{task.name}-{split}"
    media.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(texts[:first]):
        item = media / f"{i:05d}{task.suffix}"
        task.save(task.make(text, rng), item)
        question = task.questions[i % len(task.questions)] if split == "heldout" else rng.choice(task.questions)
        rows.append({"id": f"{task.name}-{split}-{i:05d}", "text": text, "conversations": [
            {"role": "user", "content": [{"type": task.media, task.media: str(item.relative_to(out))},
                                         {"type": "text", "text": question}]},
            {"role": "assistant", "content": ""}]})
    from .pipeline import write_jsonl
    return write_jsonl(path, rows)


def table() -> str:
    """The README's competent-target rows, rendered from each shipped target's competent_target.json (what its build
    measured)."""
    import json
    rows = ["| target | held-out exact | characters | texts | build | run |", "|---|---|---|---|---|---|"]
    for target in sorted((FIXTURES / "targets").glob("*/competent_target.json"), reverse=True):
        target = target.parent
        info = json.loads((target / "competent_target.json").read_text())
        h, r = info["heldout"], info["recipe"]
        rows.append(f"| `{target.name}` | {h['exact']:.1%} | {h['char_accuracy']:.1%} | {h['texts']} | "
                    f"{r['steps']} steps × {r['batch']}, {info['build_seconds']:.0f} s | {info['date'][:10]}, commit "
                    f"{info['commit']}, {info['machine']['cpus']} CPUs |")
    return "\n".join(rows)
