"""`vllm serve` as a real HTTP server with --speculative-config, for an image target and an audio target: OpenAI
chat requests with data-URI media, greedy answers equal to the same chat served offline without speculation, and
acceptance counters read from /metrics."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from helpers import LIMITS, chat_prompts, make_llm, pipeline, shutdown

MAX_TOKENS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def _post(url: str, body: dict, timeout: float = 120.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_audio"])
def test_vllm_serve_with_eagle3_over_http(family, tmp_path):
    from vllm import SamplingParams
    pipe = pipeline(family)            # a tiny pretrained target and the draft eagle3-train made for it
    target, draft = pipe["target"], pipe["online"]
    messages = chat_prompts(family, 2)

    llm = make_llm(target)   # the reference: offline, no speculation
    ref = [list(o.outputs[0].token_ids) for o in
           llm.chat(messages, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))]
    shutdown(llm)

    port = _free_port()
    spec = {"method": "eagle3", "model": str(draft), "num_speculative_tokens": 3}
    cmd = [os.path.join(os.path.dirname(sys.executable), "vllm"), "serve", str(target), "--host", "127.0.0.1",
           "--port", str(port), "--speculative-config", json.dumps(spec), "--enforce-eager", "--dtype", "bfloat16",
           "--max-model-len", "1024", "--max-num-seqs", "4", "--limit-mm-per-prompt", json.dumps(LIMITS[family]),
           "--served-model-name", "tiny"]
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    try:
        deadline = time.time() + 240
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/health")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"vllm serve did not come up:\n{(tmp_path / 'server.log').read_text()[-4000:]}")
                time.sleep(1)
        answers = []
        for msgs in messages:
            r = _post(f"http://127.0.0.1:{port}/v1/chat/completions",
                      {"model": "tiny", "messages": msgs, "max_tokens": MAX_TOKENS, "temperature": 0,
                       "ignore_eos": True, "return_token_ids": True})
            choice = r["choices"][0]
            assert r["usage"]["completion_tokens"] == MAX_TOKENS
            answers.append(choice["token_ids"])
            assert isinstance(choice["message"]["content"], str)
        assert answers == ref, "speculative decoding over HTTP changed the greedy answer"
        metrics = _get(f"http://127.0.0.1:{port}/metrics")
        drafts = _metric(metrics, "vllm:spec_decode_num_drafts_total")
        draft_tokens = _metric(metrics, "vllm:spec_decode_num_draft_tokens_total")
        accepted = _metric(metrics, "vllm:spec_decode_num_accepted_tokens_total")
        print(f"[{family}] /metrics drafts={drafts} draft_tokens={draft_tokens} accepted={accepted}")
        assert drafts > 0 and draft_tokens == 3 * drafts and 0 < accepted <= draft_tokens
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
