"""`eagle3-train regenerate`: rewrite the assistant turns of a jsonl with the target itself, through any
OpenAI-compatible server (`vllm serve TARGET`). A draft learns the target's distribution, so its training answers
should be the target's own.

- text, image and audio conversations (media are sent as data URIs; the output keeps the file references);
- concurrent (--concurrency requests in flight), each assistant turn regenerated in order given the earlier ones;
- resumable: ids already in the output are skipped, and each finished conversation is appended (and flushed) at once;
- never loses input: a bad line or a failed request goes to OUTPUT.errors.jsonl with the reason, and counts are
  reported at the end.
"""
from __future__ import annotations

import base64
import json
import os
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from .data import DataError, read_jsonl

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
        ".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg"}


@dataclass
class RegenConfig:
    input: str
    output: str
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = None           # served model name (default: the server's first model)
    concurrency: int = 8
    max_tokens: int = 512
    temperature: float = 0.0
    timeout: float = 600.0
    api_key: str = os.environ.get("OPENAI_API_KEY", "EMPTY")


def _data_uri(path: Path) -> str:
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def request_messages(messages, media) -> list[dict]:
    """Seed-format messages -> OpenAI chat messages with data-URI media."""
    it = iter(media)
    out = []
    for m in messages:
        parts = []
        for p in m["content"]:
            if p["type"] == "text":
                parts.append({"type": "text", "text": p["text"]})
            elif p["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": _data_uri(next(it)[1])}})
            elif p["type"] == "audio":
                parts.append({"type": "audio_url", "audio_url": {"url": _data_uri(next(it)[1])}})
        if m["role"] != "user" and all(p["type"] == "text" for p in parts):
            parts = "".join(p["text"] for p in parts)
        out.append({"role": m["role"], "content": parts})
    return out


def _post(cfg: RegenConfig, body: dict) -> dict:
    req = urllib.request.Request(cfg.base_url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "Authorization": f"Bearer {cfg.api_key}"})
    with urllib.request.urlopen(req, timeout=cfg.timeout) as r:
        return json.loads(r.read())


def _served_model(cfg: RegenConfig) -> str:
    url = cfg.base_url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.loads(r.read())["data"][0]["id"]
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise SystemExit(f"regenerate: no OpenAI-compatible server answers at {url} ({e}); start the target first "
                         f"(e.g. `vllm serve TARGET`) and pass its --base-url, ending in /v1") from None


def _regenerate_one(cfg: RegenConfig, conv, out_dir: Path) -> dict:
    msgs = [dict(m) for m in conv.messages]
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        body = {"model": cfg.model, "messages": request_messages(msgs[:i], conv.media),
                "max_tokens": cfg.max_tokens, "temperature": cfg.temperature}
        r = _post(cfg, body)
        text = r["choices"][0]["message"]["content"] or ""
        msgs[i] = {"role": "assistant", "content": [{"type": "text", "text": text}]}
    # media references rewritten relative to the output file's folder
    it = iter(conv.media)
    for m in msgs:
        for p in m["content"]:
            if p["type"] in ("image", "audio"):
                p[p["type"]] = os.path.relpath(next(it)[1], out_dir)
    return {"id": conv.id, "conversations": msgs}


def regenerate(cfg: RegenConfig, progress: bool = True) -> dict:
    from tqdm.auto import tqdm
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    err_path = out.with_name(out.name + ".errors.jsonl")
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            try:
                done.add(str(json.loads(line)["id"]))
            except (json.JSONDecodeError, KeyError):
                pass
    errors: list[DataError] = []
    convs = [c for c in read_jsonl(cfg.input, errors) if c.id not in done]
    cfg.model = cfg.model or _served_model(cfg)
    lock = threading.Lock()
    counts = {"done_before": len(done), "written": 0, "failed": 0, "bad_lines": len(errors)}
    with open(out, "a", encoding="utf-8") as fout, open(err_path, "a", encoding="utf-8") as ferr:
        for e in errors:
            ferr.write(json.dumps({"where": e.where, "error": e.message, "fix": e.fix}) + "\n")
        with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
            futures = {pool.submit(_regenerate_one, cfg, c, out.parent.resolve()): c for c in convs}
            for fut in tqdm(as_completed(futures), total=len(futures), desc="regenerate", unit="conv",
                            disable=not progress):
                c = futures[fut]
                with lock:
                    try:
                        fout.write(json.dumps(fut.result(), ensure_ascii=False) + "\n")
                        fout.flush()
                        counts["written"] += 1
                    except Exception as e:  # noqa: BLE001 - keep going, record the reason
                        ferr.write(json.dumps({"where": c.where, "id": c.id, "error": f"{type(e).__name__}: {e}"})
                                   + "\n")
                        counts["failed"] += 1
    print(f"regenerate: {counts['written']} written, {counts['done_before']} already done, "
          f"{counts['failed']} failed, {counts['bad_lines']} bad input lines"
          + (f" (details: {err_path})" if counts["failed"] or counts["bad_lines"] else ""))
    return counts
