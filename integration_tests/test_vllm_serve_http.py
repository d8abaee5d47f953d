"""`vllm serve` as a real HTTP server with --speculative-config, for an image target and an audio target: OpenAI
chat requests with data-URI media, greedy answers equal to the same chat served offline without speculation,
acceptance counters read from /metrics, and `eagle3-train bench`'s HTTP path measured against the same server."""
from __future__ import annotations

import json
import urllib.request

import pytest

from helpers import chat_prompts, heldout_chats, make_llm, pipeline, shutdown

MAX_TOKENS = 16


def _post(url: str, body: dict, timeout: float = 120.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_audio"])
def test_vllm_serve_with_eagle3_over_http(family, tmp_path):
    from vllm import SamplingParams
    from eagle3_plugin.bench import BenchConfig
    from eagle3_plugin.bench.server import measure, vllm_counters
    from eagle3_plugin.launch import VllmServer
    pipe = pipeline(family)            # a tiny pretrained target and the draft eagle3-train made for it
    target, draft = pipe["target"], pipe["online"]
    messages = chat_prompts(family, 2)

    llm = make_llm(target)   # the reference: offline, no speculation
    ref = [list(o.outputs[0].token_ids) for o in
           llm.chat(messages, SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True))]
    shutdown(llm)

    with VllmServer(target, tmp_path / "server.log", draft=draft, k=3, served_name="tiny",
                    extra=["--max-model-len", "1024", "--max-num-seqs", "4"]) as srv:
        answers = []
        for msgs in messages:
            r = _post(f"{srv.base_url}/chat/completions",
                      {"model": "tiny", "messages": msgs, "max_tokens": MAX_TOKENS, "temperature": 0,
                       "ignore_eos": True, "return_token_ids": True})
            choice = r["choices"][0]
            assert r["usage"]["completion_tokens"] == MAX_TOKENS
            answers.append(choice["token_ids"])
            assert isinstance(choice["message"]["content"], str)
        assert answers == ref, "speculative decoding over HTTP changed the greedy answer"
        root = srv.base_url.removesuffix("/v1")
        c = vllm_counters(root)
        print(f"[{family}] /metrics {c}")
        assert c["drafts"] > 0 and c["draft_tokens"] == 3 * c["drafts"] and 0 < c["accepted"] <= c["draft_tokens"]
        assert sum(c["per_pos"]) == c["accepted"] and len(c["per_pos"]) == 3

        # the bench's vllm-serve path on the same server: streamed chats, counts from /metrics around the run
        cfg = BenchConfig(engine="vllm-serve", output_len=32, max_num_seqs=2)
        run = measure(root, heldout_chats(pipe["heldout"])[:6], cfg, "k=3", {"num_speculative_tokens": 3},
                      "vllm", spec=True)
        after = vllm_counters(root)
        s = run.spec
        assert 0 < s.verifies <= after["drafts"] - c["drafts"] and s.proposed == 3 * s.verifies
        assert run.output_tokens > 0 and all(0 < p <= e for p, e in zip(run.prefill_s, run.e2e_s))
        print(f"[{family}] bench over HTTP: acceptance length {s.acceptance_length():.2f}, "
              f"{run.tokens_per_s:.1f} tok/s")
        assert s.acceptance_length() > 1.5
