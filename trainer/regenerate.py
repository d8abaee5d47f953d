"""`eagle3-train regenerate`: rewrite the assistant turns of a seed-format jsonl with the target itself, through any
OpenAI-compatible server. A draft learns the target's distribution, so its training answers should be the target's own.

Serving. Start the target first, `vllm serve TARGET` (or SGLang's `python -m sglang.launch_server`), and pass its
URL, ending in /v1. For throughput, `vllm serve TARGET --data-parallel-size N` runs N replicas behind that one URL
(vLLM balances requests between them; raise --concurrency so all N stay busy). Servers of their own (other nodes, or
one `vllm serve` per GPU on different ports) are given as several --base-url values: conversations go to them
round-robin, and a conversation stays on one server so its later turns reuse that server's prefix cache.

What comes out. One row per input row, {"id", "source_line", "conversations"}, in completion order. Each assistant
turn is regenerated in order, given the earlier regenerated ones; media are sent as data URIs and stay file references
(relative to the output's folder). A regenerated assistant message has its `content`, `reasoning_content` when the
server returns the reasoning separately (`reasoning_content`, or vLLM's `reasoning`), and `token_ids` — exactly the
tokens the target generated — when the server returns them (vLLM does, for `return_token_ids`), so a trainer can
train on those tokens rather than on a re-tokenisation of the text.

Never loses or corrupts a row:
- a row is its input line number plus its id, so rows with the same id are separate rows, each regenerated;
- each finished row is appended as one whole line, in one write and a flush; if a crash tears the last line, the
  next run cuts it away (and says so) rather than gluing the next row onto it;
- a rerun skips the rows already in the output and sends the rest again, last run's failures included;
- timeouts, lost connections and HTTP 408/409/429/5xx are retried up to --retries times with exponential backoff;
- whatever still fails — an error status, an empty answer, a response without choices or message, a response that is
  not JSON — and every bad input line goes to OUTPUT.errors.jsonl with the input line, id, reason and fix, never into
  the output. That file lists the latest run's problems (each run rewrites it: the failures are retried anyway).
  A summary line gives the counts; the command exits 1 if any conversation failed.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .data import Conversation, DataError, read_jsonl

DEFAULT_URL = "http://127.0.0.1:8000/v1"
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
        ".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg"}
MAX_BACKOFF_S = 60.0
RETRY_STATUSES = {408, 409, 429}   # and every 5xx: the statuses the OpenAI client itself treats as transient


@dataclass
class RegenConfig:
    input: str
    output: str
    base_url: str | list[str] = DEFAULT_URL    # several: conversations go to them round-robin
    model: str | None = None                   # served model name (default: the first server's first model)
    concurrency: int = 8                       # conversations in flight, over all servers
    max_tokens: int = 512
    temperature: float = 0.0
    timeout: float = 600.0                     # seconds for one request
    api_key: str = field(default_factory=lambda: os.environ.get("OPENAI_API_KEY", "EMPTY"))
    retries: int = 3                           # extra attempts for a transient failure
    chat_template_kwargs: dict | None = None   # e.g. {"enable_thinking": False}
    backoff: float = 1.0                       # seconds before the first retry; doubles each time, up to 60

    @property
    def base_urls(self) -> list[str]:
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


class RequestFailed(Exception):
    """A conversation that could not be regenerated: the reason and the fix, for the errors file."""

    def __init__(self, reason: str, fix: str = ""):
        super().__init__(reason)
        self.reason, self.fix = reason, fix
        self.turn: int | None = None    # index of the assistant turn in `conversations`, once known


# ----------------------------------------------------------------------------------------------- requests
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


class Server:
    """One OpenAI-compatible endpoint."""

    def __init__(self, url: str, cfg: RegenConfig):
        import openai
        self.url = url.rstrip("/")
        # The client's own retries are off: _complete is the one retry loop, so --retries bounds the attempts
        # (two layers would multiply them).
        self.client = openai.OpenAI(base_url=self.url, api_key=cfg.api_key, timeout=cfg.timeout, max_retries=0)

    def models(self, timeout: float, retries: int = 0, backoff: float = 1.0) -> list[str]:
        import openai
        url = self.url + "/models"
        try:
            for attempt in range(retries + 1):
                try:
                    raw = self.client.models.with_raw_response.list(timeout=timeout)
                    break
                except (openai.APITimeoutError, openai.APIConnectionError):
                    # a busy or still-starting server: retried like a chat request
                    if attempt == retries:
                        raise
                    time.sleep(min(MAX_BACKOFF_S, backoff * 2 ** attempt))
            return [m["id"] for m in json.loads(raw.text)["data"]]
        except openai.AuthenticationError:
            raise SystemExit(f"regenerate: {url} rejects the API key; pass the server's key with --api-key "
                             f"(or set OPENAI_API_KEY)") from None
        except (openai.OpenAIError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"regenerate: no OpenAI-compatible server answers at {url} ({e}); start the target "
                             f"first (e.g. `vllm serve TARGET`) and pass its --base-url, ending in /v1") from None


def _served_model(servers: list[Server], cfg: RegenConfig) -> str:
    """The model to ask for; every server must serve it (checked now, not after the first failed conversation)."""
    model = cfg.model
    for s in servers:
        names = s.models(timeout=min(30.0, cfg.timeout), retries=cfg.retries, backoff=cfg.backoff)
        model = model or (names[0] if names else None)
        if model not in names:
            raise SystemExit(f"regenerate: {s.url} serves {names or 'no models'}, not {model!r}; pass --model with "
                             f"a name every --base-url serves")
    return model


def _failure(e: Exception, server: Server, cfg: RegenConfig) -> tuple[RequestFailed, bool]:
    """An exception from the client -> (the failure to record, whether it is worth retrying)."""
    import openai
    if isinstance(e, openai.APITimeoutError):
        return RequestFailed(f"no answer from {server.url} within --timeout {cfg.timeout:g} s",
                             "raise --timeout, or lower --max-tokens or --concurrency"), True
    if isinstance(e, openai.APIConnectionError):
        return RequestFailed(f"connection to {server.url} failed: {e.__cause__ or e}",
                             "check that the server is still up (its log says why it stopped)"), True
    code = e.status_code
    fix = {400: "check --max-tokens against the server's --max-model-len, and --chat-template-kwargs",
           401: "pass the server's key with --api-key", 403: "pass the server's key with --api-key",
           404: "check --model and that --base-url ends in /v1"}.get(code, "see the server's log")
    return RequestFailed(f"{server.url}: {e}", fix), code >= 500 or code in RETRY_STATUSES


def _complete(server: Server, cfg: RegenConfig, model: str, messages: list[dict]) -> dict:
    """One chat completion -> the assistant message to store, retrying transient failures."""
    import openai
    extra = {"return_token_ids": True}        # vLLM: the choice carries token_ids; other servers ignore the field
    if cfg.chat_template_kwargs:
        extra["chat_template_kwargs"] = cfg.chat_template_kwargs
    for attempt in range(cfg.retries + 1):
        try:
            raw = server.client.chat.completions.with_raw_response.create(
                model=model, messages=messages, max_tokens=cfg.max_tokens, temperature=cfg.temperature,
                extra_body=extra)
            # parsed here, not by the client's models, so that a malformed body is a reason, not an AttributeError
            return parse_answer(raw.text)
        except (openai.APIConnectionError, openai.APIStatusError) as e:
            failure, transient = _failure(e, server, cfg)
        if not transient:
            raise failure
        if attempt < cfg.retries:
            # jittered, so that the conversations in flight do not all come back at the same instant
            time.sleep(min(MAX_BACKOFF_S, cfg.backoff * 2 ** attempt) * random.uniform(0.5, 1.0))
    failure.reason += f" (gave up after {cfg.retries + 1} attempts)"
    raise failure


def parse_answer(text: str) -> dict:
    """A chat-completion response body -> {"role": "assistant", "content": [...], reasoning_content?, token_ids?};
    RequestFailed for anything that is not a non-empty answer."""
    try:
        body = json.loads(text)
    except ValueError:
        raise RequestFailed(f"malformed response, not JSON: {text[:200]!r}",
                            "check that --base-url is an OpenAI-compatible server's /v1") from None
    if not isinstance(body, dict):
        raise RequestFailed(f"malformed response, not a JSON object: {text[:200]!r}",
                            "check that --base-url is an OpenAI-compatible server's /v1")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        err = f" (error: {body['error']})" if "error" in body else ""
        raise RequestFailed(f"response has no choices{err}", "see the server's log")
    choice = choices[0]
    msg = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(msg, dict):
        raise RequestFailed("response choices[0] has no message", "see the server's log")
    content, finish = msg.get("content"), choice.get("finish_reason")
    if content is not None and not isinstance(content, str):
        raise RequestFailed(f"response choices[0].message.content is a {type(content).__name__}, not a string",
                            "see the server's log")
    if not content:
        fix = ("the answer ran out of --max-tokens (in its reasoning?): raise --max-tokens, or turn thinking off "
               "with --chat-template-kwargs '{\"enable_thinking\": false}'" if finish == "length"
               else "the target answered nothing to this conversation: check the prompt, or drop the row")
        raise RequestFailed(f"empty answer (content {json.dumps(content)}, finish_reason {finish!r})", fix)
    out = {"role": "assistant", "content": [{"type": "text", "text": content}]}
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        out["reasoning_content"] = reasoning
    ids = choice.get("token_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise RequestFailed("response choices[0].token_ids is not a list of token ids", "see the server's log")
        out["token_ids"] = ids
    return out


def _regenerate_one(server: Server, cfg: RegenConfig, model: str, conv: Conversation, line: int,
                    out_dir: Path) -> dict:
    msgs = [dict(m) for m in conv.messages]
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        try:
            msgs[i] = _complete(server, cfg, model, request_messages(msgs[:i], conv.media))
        except RequestFailed as e:
            e.turn = i
            raise
    it = iter(conv.media)
    for m in msgs:
        for p in m["content"]:
            if p["type"] in ("image", "audio"):
                p[p["type"]] = os.path.relpath(next(it)[1], out_dir)
    return {"id": conv.id, "source_line": line, "conversations": msgs}


# ----------------------------------------------------------------------------------------------- files
def _line_of(where: str) -> int:
    """"path:line" (Conversation.where, DataError.where) -> line."""
    return int(where.rsplit(":", 1)[1])


def _append(f, obj: dict) -> None:
    """One whole line in one write, flushed at once: a crash can tear only the last line, which resume cuts."""
    f.write((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))
    f.flush()


def _json_object(line: bytes) -> dict | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def scan_output(out: Path) -> tuple[set[tuple[int, str]], set[str], int]:
    """The rows already in OUTPUT, after cutting away a torn last line in place.

    Returns ((source_line, id) of each row, ids of rows written before rows carried source_line, bytes cut)."""
    done: set[tuple[int, str]] = set()
    legacy: set[str] = set()
    if not out.exists():
        return done, legacy, 0
    with open(out, "rb+") as f:
        good, n = 0, 0
        while line := f.readline():
            n += 1
            row = _json_object(line) if line.endswith(b"\n") else None
            if row is None and line.strip():
                if f.read(1):
                    # appends are whole lines, so a bad line with rows after it is not ours: deleting it could lose
                    # someone's data, keeping it would corrupt the training set
                    raise SystemExit(f"regenerate: {out}:{n} is not a JSON object, and it is not the last line, so it "
                                     f"is not a torn append; fix: delete or repair that line (its row is then "
                                     f"regenerated) and rerun")
                f.truncate(good)
                return done, legacy, len(line)
            good += len(line)
            if row is None:
                continue    # blank line
            if "source_line" in row:
                done.add((row["source_line"], str(row.get("id"))))
            elif "id" in row:
                legacy.add(str(row["id"]))
    return done, legacy, 0


# ----------------------------------------------------------------------------------------------- the command
def _check(cfg: RegenConfig) -> None:
    if not Path(cfg.input).is_file():
        raise SystemExit(f"regenerate: input {cfg.input} not found; fix: pass --input a seed-format jsonl")
    if Path(cfg.input).resolve() == Path(cfg.output).resolve():
        raise SystemExit(f"regenerate: --output is the input {cfg.input}; fix: write to another file")
    if not cfg.base_urls:
        raise SystemExit("regenerate: no --base-url given; fix: pass the server's URL, ending in /v1")
    for name, value, low in (("concurrency", cfg.concurrency, 1), ("retries", cfg.retries, 0),
                             ("max_tokens", cfg.max_tokens, 1)):
        if value < low:
            raise SystemExit(f"regenerate: --{name.replace('_', '-')} is {value}; fix: give at least {low}")
    if cfg.timeout <= 0:
        raise SystemExit(f"regenerate: --timeout is {cfg.timeout}; fix: give a number of seconds above 0")


def regenerate(cfg: RegenConfig, progress: bool = True) -> dict:
    """Regenerate cfg.input into cfg.output (resuming it). Returns the counts: written, done_before, failed,
    bad_lines, torn_line_repaired."""
    from tqdm.auto import tqdm
    _check(cfg)
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    err_path = out.with_name(out.name + ".errors.jsonl")
    done, legacy, torn = scan_output(out)
    if torn:
        print(f"regenerate: {out}: cut a torn last line ({torn} bytes, left by an interrupted run); "
              f"its row is regenerated")
    bad: list[DataError] = []
    todo: list[tuple[int, Conversation]] = []
    n_done = 0
    for conv in read_jsonl(cfg.input, bad):
        line = _line_of(conv.where)
        if (line, conv.id) in done or conv.id in legacy:
            n_done += 1
        else:
            todo.append((line, conv))
    counts = {"written": 0, "done_before": n_done, "failed": 0, "bad_lines": len(bad),
              "torn_line_repaired": int(torn > 0)}
    servers = [Server(u, cfg) for u in cfg.base_urls]
    model = _served_model(servers, cfg) if todo else None   # nothing left to do needs no server
    out_dir = out.parent.resolve()
    with open(out, "ab") as fout, open(err_path, "wb") as ferr:
        for e in bad:
            _append(ferr, {"where": e.where, "source_line": _line_of(e.where), "id": None, "error": e.message,
                           "fix": e.fix})
        pool = ThreadPoolExecutor(max_workers=cfg.concurrency)
        try:
            futures = {pool.submit(_regenerate_one, servers[k % len(servers)], cfg, model, conv, line, out_dir):
                       (line, conv) for k, (line, conv) in enumerate(todo)}
            for fut in tqdm(as_completed(futures), total=len(futures), desc="regenerate", unit="conv",
                            disable=not progress):
                line, conv = futures[fut]
                try:
                    row = fut.result()
                except RequestFailed as e:
                    reason, fix, turn = e.reason, e.fix, e.turn
                except Exception as e:  # noqa: BLE001 - e.g. a media file gone since it was read: record, go on
                    reason, fix, turn = f"{type(e).__name__}: {e}", "", None
                else:
                    _append(fout, row)
                    counts["written"] += 1
                    continue
                _append(ferr, {"where": conv.where, "source_line": line, "id": conv.id, "turn": turn,
                               "error": reason, "fix": fix})
                counts["failed"] += 1
        finally:
            # on Ctrl-C the queue is dropped rather than worked through; every finished row is already on disk
            pool.shutdown(cancel_futures=True)
    print(f"regenerate: {counts['written']} written, {counts['done_before']} already done, {counts['failed']} failed, "
          f"{counts['bad_lines']} bad input lines, {counts['torn_line_repaired']} torn line repaired; "
          f"errors: {err_path}")
    return counts


# ----------------------------------------------------------------------------------------------- command line
class _UrlList(argparse.Action):
    """`--base-url A B` and `--base-url A --base-url B` both give [A, B]; given URLs replace the default."""

    def __call__(self, parser, namespace, values, option_string=None):
        urls = getattr(namespace, self.dest)
        setattr(namespace, self.dest, (urls if urls is not self.default else []) + list(values))


def _json_object_arg(text: str) -> dict:
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}); write e.g. '{{\"enable_thinking\": false}}'") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"enable_thinking\": false}'")
    return obj


def _run(args) -> int:
    key = {"api_key": args.api_key} if hasattr(args, "api_key") else {}   # else RegenConfig's environment default
    counts = regenerate(RegenConfig(
        input=args.input, output=args.output, base_url=args.base_url, model=getattr(args, "model", None),
        concurrency=args.concurrency, max_tokens=args.max_tokens, temperature=args.temperature, timeout=args.timeout,
        retries=args.retries, chat_template_kwargs=args.chat_template_kwargs, **key), progress=not args.no_progress)
    return 1 if counts["failed"] else 0


def configure_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `regenerate` subcommand; its func(args) runs it and returns the exit code."""
    p = subparsers.add_parser(
        "regenerate", help="rewrite assistant turns with the target through an OpenAI-compatible server",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Start the target first, e.g. `vllm serve TARGET` (add --data-parallel-size N for N replicas "
                    "behind one URL). Resumable; bad lines and failed conversations go to OUTPUT.errors.jsonl, and "
                    "the exit code is 1 if any conversation failed.")
    p.add_argument("--input", "-i", required=True, help="conversations jsonl (seed format)")
    p.add_argument("--output", "-o", required=True, help="jsonl to append regenerated conversations to (resumed)")
    p.add_argument("--base-url", nargs="+", action=_UrlList, default=[DEFAULT_URL], metavar="URL",
                   help="the server's OpenAI API, ending in /v1; several (or the flag repeated): round-robin over "
                        "them, one conversation per server")
    # SUPPRESS: these defaults are described in the help, not printed as "None" (nor the environment's key)
    p.add_argument("--model", default=argparse.SUPPRESS,
                   help="served model name (default: the first server's first model)")
    p.add_argument("--api-key", default=argparse.SUPPRESS,
                   help="the server's API key (default: $OPENAI_API_KEY, else EMPTY)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one answer")
    p.add_argument("--retries", type=int, default=3,
                   help="retries of a timed-out, lost or 408/409/429/5xx request, with exponential backoff")
    p.add_argument("--chat-template-kwargs", type=_json_object_arg, metavar="JSON",
                   help="passed to the server's chat template, e.g. '{\"enable_thinking\": false}'")
    p.add_argument("--concurrency", type=int, default=8, help="conversations in flight, over all servers")
    p.add_argument("--max-tokens", type=int, default=512, help="most tokens per answer")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
    return p
