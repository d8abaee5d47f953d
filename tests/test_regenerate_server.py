"""`eagle3-train regenerate` never loses or corrupts a row, against OpenAI-compatible stubs: torn last lines are cut on
resume, duplicate ids are separate rows, empty or malformed answers go to the errors file with reasons, transient
failures are retried, --timeout is honoured, the API key, chat-template kwargs and token-id request reach the server,
reasoning and token ids are stored, several servers share the work, and the command line wires all of it."""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from eagle3_plugin.trainer.regenerate import DEFAULT_URL, RegenConfig, configure_parser, regenerate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_sglang_server import send_json  # noqa: E402


def prompt_of(req: dict) -> str:
    """The text of the first user turn: the stubs' key for what to answer."""
    first = next(m for m in req["messages"] if m["role"] == "user")["content"]
    return first if isinstance(first, str) else " ".join(p.get("text", "") for p in first)


def ok(text: str, **choice) -> tuple[int, dict]:
    return 200, {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop", **choice}]}


class Stub:
    """An OpenAI-compatible server on 127.0.0.1 whose answers come from `answer(req, attempt)` -> (status, body),
    body a dict (sent as JSON), a str (sent as is) or None (the connection is dropped without a response).
    The first `dropped_gets` GETs are dropped unanswered. Records every request with its headers (names lower-cased).
    """

    def __init__(self, answer, models=("stub-model",), dropped_gets: int = 0):
        self.posts: list[tuple[dict, dict]] = []
        self.gets: list[dict] = []
        attempts: Counter = Counter()
        lock = threading.Lock()
        stub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                stub.gets.append({k.lower(): v for k, v in self.headers.items()})
                if len(stub.gets) <= dropped_gets:          # a server still starting: no answer yet
                    self.close_connection = True
                    return
                send_json(self, {"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

            def do_POST(self):
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    stub.posts.append(({k.lower(): v for k, v in self.headers.items()}, req))
                    key = (prompt_of(req), len(req["messages"]))
                    attempts[key] += 1
                    attempt = attempts[key]
                code, body = answer(req, attempt)
                if body is None:
                    self.close_connection = True
                    return
                raw = (body if isinstance(body, str) else json.dumps(body)).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass    # the client stopped waiting (the timeout test)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def prompts(self) -> list[str]:
        return [prompt_of(r) for _, r in self.posts]


@pytest.fixture
def stub():
    made = []

    def make(answer=lambda req, attempt: ok(f"re: {prompt_of(req)}"), **kw) -> Stub:
        made.append(Stub(answer, **kw))
        return made[-1]

    yield make
    for s in made:
        s.srv.shutdown()
        s.srv.server_close()


def row(id_, prompt: str, turns: int = 1) -> dict:
    conv = []
    for t in range(turns):
        conv += [{"role": "user", "content": prompt if t == 0 else f"{prompt} more {t}"},
                 {"role": "assistant", "content": "old"}]
    return {"id": id_, "conversations": conv}


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def errors_of(out: Path) -> list[dict]:
    return lines(out.with_name(out.name + ".errors.jsonl"))


def cfg(src, out, url, **kw) -> RegenConfig:
    return RegenConfig(input=str(src), output=str(out), base_url=url, concurrency=kw.pop("concurrency", 4),
                       backoff=kw.pop("backoff", 0.01), **kw)


# ----------------------------------------------------------------------------------------------- rows
def test_duplicate_ids_are_separate_rows_and_resume_skips_done_rows(tmp_path, stub):
    s = stub()
    src = write(tmp_path / "in.jsonl", [row("d", "one"), row("d", "two"), row("e", "three")])
    out = tmp_path / "out.jsonl"
    assert regenerate(cfg(src, out, s.url), progress=False)["written"] == 3
    got = sorted((r["source_line"], r["id"], r["conversations"][1]["content"][0]["text"]) for r in lines(out))
    assert got == [(1, "d", "re: one"), (2, "d", "re: two"), (3, "e", "re: three")]

    again = regenerate(cfg(src, out, s.url), progress=False)
    assert (again["written"], again["done_before"], again["failed"]) == (0, 3, 0)
    assert len(s.posts) == 3                                    # nothing sent again

    write(src, [row("d", "one"), row("d", "two"), row("e", "three"), row("d", "four")])
    more = regenerate(cfg(src, out, s.url), progress=False)
    assert (more["written"], more["done_before"]) == (1, 3)
    assert s.prompts()[3:] == ["four"] and len(lines(out)) == 4


def test_rows_written_before_source_line_existed_count_as_done_by_id(tmp_path, stub):
    s = stub()
    src = write(tmp_path / "in.jsonl", [row("a", "one"), row("b", "two")])
    out = write(tmp_path / "out.jsonl", [row("a", "old answer")])  # an older version's row: no source_line
    counts = regenerate(cfg(src, out, s.url), progress=False)
    assert (counts["written"], counts["done_before"]) == (1, 1) and s.prompts() == ["two"]


@pytest.mark.parametrize("tear", [lambda line: line[: len(line) // 2],        # cut mid-row
                                  lambda line: line.rstrip(b"\n")])            # cut just before the newline
def test_torn_last_line_is_cut_on_resume_and_its_row_regenerated(tmp_path, stub, capsys, tear):
    s = stub()
    src = write(tmp_path / "in.jsonl", [row("a", "one"), row("b", "two"), row("c", "three")])
    out = tmp_path / "out.jsonl"
    regenerate(cfg(src, out, s.url, concurrency=1), progress=False)
    whole = out.read_bytes().splitlines(keepends=True)
    torn_row = json.loads(whole[-1])
    out.write_bytes(b"".join(whole[:-1]) + tear(whole[-1]))     # a crash in the middle of the last append
    capsys.readouterr()

    counts = regenerate(cfg(src, out, s.url), progress=False)
    assert (counts["torn_line_repaired"], counts["written"], counts["done_before"]) == (1, 1, 2)
    assert "cut a torn last line" in capsys.readouterr().out
    rows = lines(out)                                           # every line is a whole row again
    assert sorted(r["source_line"] for r in rows) == [1, 2, 3]
    assert rows[-1]["source_line"] == torn_row["source_line"]
    assert out.read_bytes().endswith(b"\n")


def test_a_bad_line_that_is_not_the_last_is_not_deleted(tmp_path, stub):
    s = stub()
    src = write(tmp_path / "in.jsonl", [row("a", "one")])
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "x", "source_line": 9, "conversations": []}\n{broken\n{"id": "y", "source_line": 8}\n')
    before = out.read_bytes()
    with pytest.raises(SystemExit, match=r"out\.jsonl:2 is not a JSON object.*delete or repair that line"):
        regenerate(cfg(src, out, s.url), progress=False)
    assert out.read_bytes() == before and not s.posts


# ----------------------------------------------------------------------------------------------- answers
BAD_ANSWERS = {
    "null": (ok(None), "empty answer (content null"),
    "empty": (ok(""), 'empty answer (content ""'),
    "length": ((200, {"choices": [{"message": {"content": None, "reasoning": "hmm"}, "finish_reason": "length"}]}),
               "finish_reason 'length'"),
    "nochoices": ((200, {"choices": []}), "response has no choices"),
    "errorbody": ((200, {"error": {"message": "engine died"}}), "response has no choices (error:"),
    "nomessage": ((200, {"choices": [{"index": 0, "finish_reason": "stop"}]}), "choices[0] has no message"),
    "notjson": ((200, "<html>proxy error</html>"), "malformed response, not JSON"),
    "notobject": ((200, "[1, 2]"), "not a JSON object"),
    "badids": (ok("fine", token_ids=["a"]), "token_ids is not a list of token ids"),
    "http400": ((400, {"error": {"message": "prompt too long"}}), "400"),
}


def test_empty_and_malformed_answers_go_to_errors_with_reasons(tmp_path, stub):
    s = stub(lambda req, attempt: BAD_ANSWERS[prompt_of(req)][0] if prompt_of(req) in BAD_ANSWERS
             else ok("good"))
    src = write(tmp_path / "in.jsonl", [row(name, name) for name in BAD_ANSWERS] + [row("good", "good")])
    with open(src, "a") as f:
        f.write('{"id": "broken", "conversations": \n')
    out = tmp_path / "out.jsonl"
    counts = regenerate(cfg(src, out, s.url, retries=2), progress=False)
    assert counts == {"written": 1, "done_before": 0, "failed": len(BAD_ANSWERS), "bad_lines": 1,
                      "torn_line_repaired": 0}
    assert [r["id"] for r in lines(out)] == ["good"]            # no empty string stored for a bad answer
    errs = {e["id"]: e for e in errors_of(out)}
    for line, (name, (_, reason)) in enumerate(BAD_ANSWERS.items(), 1):
        e = errs[name]
        assert reason in e["error"], (name, e)
        assert e["source_line"] == line and e["where"].endswith(f"in.jsonl:{line}") and e["turn"] == 1
        assert e["fix"]
    assert "--max-tokens" in errs["length"]["fix"] and "max-model-len" in errs["http400"]["fix"]
    bad_line = errs[None]
    assert bad_line["source_line"] == len(BAD_ANSWERS) + 2 and "malformed JSON" in bad_line["error"]
    assert Counter(s.prompts())["http400"] == 1                 # a 400 is not worth retrying


# ----------------------------------------------------------------------------------------------- retries, timeout
def test_transient_failures_are_retried_until_the_answer_comes(tmp_path, stub):
    def flaky(req, attempt):
        if attempt == 1:
            return 0, None                                      # connection dropped without a response
        if attempt <= 3:
            return (503 if attempt == 2 else 500), {"error": {"message": "warming up"}}
        return ok("finally")

    s = stub(flaky)
    src = write(tmp_path / "in.jsonl", [row("a", "one"), row("b", "two")])
    out = tmp_path / "out.jsonl"
    counts = regenerate(cfg(src, out, s.url, retries=3), progress=False)
    assert (counts["written"], counts["failed"]) == (2, 0)
    assert Counter(s.prompts()) == {"one": 4, "two": 4}
    assert all(r["conversations"][1]["content"][0]["text"] == "finally" for r in lines(out))


def test_retries_are_bounded_and_the_failure_says_so(tmp_path, stub):
    s = stub(lambda req, attempt: (500, {"error": {"message": "boom"}}))
    src = write(tmp_path / "in.jsonl", [row("a", "one")])
    out = tmp_path / "out.jsonl"
    counts = regenerate(cfg(src, out, s.url, retries=2), progress=False)
    assert counts["failed"] == 1 and len(s.posts) == 3 and not lines(out)
    (e,) = errors_of(out)
    assert "500" in e["error"] and "gave up after 3 attempts" in e["error"] and e["id"] == "a"


def test_timeout_is_honoured_and_a_slow_server_fails_cleanly(tmp_path, stub):
    def slow(req, attempt):
        time.sleep(1.5)
        return ok("too late")

    s = stub(slow)
    src = write(tmp_path / "in.jsonl", [row("a", "one")])
    out = tmp_path / "out.jsonl"
    t0 = time.monotonic()
    counts = regenerate(cfg(src, out, s.url, timeout=0.3, retries=1), progress=False)
    assert time.monotonic() - t0 < 2.5                          # two attempts of 0.3 s, not 1.5 s each
    assert counts["failed"] == 1 and not lines(out)
    (e,) = errors_of(out)
    assert "within --timeout 0.3 s" in e["error"] and "gave up after 2 attempts" in e["error"]
    assert "--timeout" in e["fix"]


# ----------------------------------------------------------------------------------------------- what is sent and kept
def test_key_kwargs_reasoning_and_token_ids(tmp_path, stub):
    def answer(req, attempt):
        turn = len(req["messages"])
        if prompt_of(req) == "vllm":       # vLLM style: `reasoning`, and token_ids for return_token_ids
            return 200, {"choices": [{"message": {"content": f"v{turn}", "reasoning": f"think v{turn}"},
                                      "token_ids": [turn, 7, 2]}]}
        return 200, {"choices": [{"message": {"content": "s", "reasoning_content": "think s"}}]}   # SGLang style

    s = stub(answer)
    src = write(tmp_path / "in.jsonl", [row("v", "vllm", turns=2), row("s", "sglang")])
    out = tmp_path / "out.jsonl"
    regenerate(cfg(src, out, s.url, api_key="sekret", chat_template_kwargs={"enable_thinking": False}),
               progress=False)
    assert s.gets and all(h["authorization"] == "Bearer sekret" for h in s.gets + [h for h, _ in s.posts])
    for _, req in s.posts:
        assert req["chat_template_kwargs"] == {"enable_thinking": False} and req["return_token_ids"] is True
        assert req["model"] == "stub-model"
    got = {r["id"]: r["conversations"] for r in lines(out)}
    assert got["v"][1] == {"role": "assistant", "content": [{"type": "text", "text": "v1"}],
                           "reasoning_content": "think v1", "token_ids": [1, 7, 2]}
    assert got["v"][3]["token_ids"] == [3, 7, 2] and got["v"][3]["reasoning_content"] == "think v3"
    assert got["s"][1] == {"role": "assistant", "content": [{"type": "text", "text": "s"}],
                           "reasoning_content": "think s"}                 # no token_ids: the server ignored it


def test_round_robin_over_servers_one_conversation_per_server(tmp_path, stub):
    a, b = stub(), stub()
    src = write(tmp_path / "in.jsonl", [row(str(i), f"p{i}", turns=2) for i in range(4)])
    out = tmp_path / "out.jsonl"
    assert regenerate(cfg(src, out, [a.url, b.url]), progress=False)["written"] == 4
    assert a.gets and b.gets                                    # both checked at start-up
    assert len(a.posts) == len(b.posts) == 4
    assert not set(a.prompts()) & set(b.prompts())              # both turns of a conversation on one server


def test_server_problems_at_start_up_are_one_line_exits(tmp_path, stub):
    s = stub()
    src = write(tmp_path / "in.jsonl", [row("a", "one")])
    out = tmp_path / "out.jsonl"
    with socket.socket() as sock:                               # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    with pytest.raises(SystemExit, match=rf"no OpenAI-compatible server answers at {dead}/models .*vllm serve"):
        regenerate(cfg(src, out, [s.url, dead]), progress=False)
    with pytest.raises(SystemExit, match=r"serves \['stub-model'\], not 'other'; pass --model"):
        regenerate(cfg(src, out, s.url, model="other"), progress=False)
    assert not s.posts
    assert regenerate(cfg(src, out, s.url), progress=False)["written"] == 1
    # all done: no server is needed, so a dead one does not stop the run
    assert regenerate(cfg(src, out, dead), progress=False)["done_before"] == 1


def test_a_server_that_drops_the_first_model_list_is_asked_again(tmp_path, stub):
    s = stub(dropped_gets=2)
    src = write(tmp_path / "in.jsonl", [row("a", "one")])
    out = tmp_path / "out.jsonl"
    assert regenerate(cfg(src, out, s.url, retries=2), progress=False)["written"] == 1
    assert len(s.gets) == 3
    s = stub(dropped_gets=2)
    with pytest.raises(SystemExit, match="no OpenAI-compatible server answers"):
        regenerate(cfg(src, tmp_path / "out2.jsonl", s.url, retries=1), progress=False)
    assert len(s.gets) == 2 and not s.posts


# ----------------------------------------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eagle3-train")
    configure_parser(p.add_subparsers(dest="cmd", required=True))
    return p


def test_command_line_flags_and_exit_code(tmp_path, stub, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    a, b = stub(), stub(lambda req, attempt: (500, {"error": {"message": "boom"}}) if prompt_of(req) == "bad"
                        else ok("fine"))
    src = write(tmp_path / "in.jsonl", [row("1", "one"), row("2", "two")])
    out = tmp_path / "out.jsonl"
    args = parser().parse_args([
        "regenerate", "-i", str(src), "-o", str(out), "--base-url", a.url, "--base-url", b.url, "--model",
        "stub-model", "--timeout", "5", "--retries", "0", "--chat-template-kwargs", '{"enable_thinking": false}',
        "--concurrency", "2", "--max-tokens", "7", "--temperature", "0.5", "--no-progress"])
    assert args.base_url == [a.url, b.url]
    assert args.func(args) == 0
    assert "2 written, 0 already done, 0 failed" in capsys.readouterr().out
    for headers, req in a.posts + b.posts:
        assert headers["authorization"] == "Bearer from-env"   # the key from the environment by default
        assert (req["max_tokens"], req["temperature"]) == (7, 0.5)
        assert req["chat_template_kwargs"] == {"enable_thinking": False}

    write(src, [row("1", "one"), row("2", "two"), row("3", "bad")])
    args = parser().parse_args(["regenerate", "-i", str(src), "-o", str(out), "--base-url", b.url, "--api-key",
                                "k2", "--retries", "0", "--no-progress"])
    assert args.func(args) == 1                                 # a failed conversation: exit code 1
    assert b.posts[-1][0]["authorization"] == "Bearer k2"
    assert "1 failed" in capsys.readouterr().out


def test_command_line_defaults_help_and_bad_json(capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "do-not-print-me")
    args = parser().parse_args(["regenerate", "-i", "x", "-o", "y"])
    assert args.base_url == [DEFAULT_URL] and (args.timeout, args.retries, args.concurrency) == (600.0, 3, 8)
    two = parser().parse_args(["regenerate", "-i", "x", "-o", "y", "--base-url", "u1", "u2"])
    assert two.base_url == ["u1", "u2"]
    with pytest.raises(SystemExit):
        parser().parse_args(["regenerate", "--help"])
    help_text = capsys.readouterr().out
    assert "do-not-print-me" not in help_text and "--data-parallel-size" in help_text
    for flag in ("--api-key", "--timeout", "--retries", "--chat-template-kwargs", "--base-url"):
        assert flag in help_text
    with pytest.raises(SystemExit):
        parser().parse_args(["regenerate", "-i", "x", "-o", "y", "--chat-template-kwargs", "{nope"])
    err = capsys.readouterr().err
    assert "argument --chat-template-kwargs: not JSON" in err and "enable_thinking" in err
    assert RegenConfig(input="x", output="y").api_key == "do-not-print-me"
