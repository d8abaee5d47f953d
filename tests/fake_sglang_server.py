#!/usr/bin/env python
"""A stand-in for `python -m sglang.launch_server` (SGLang cannot serve on this CPU): same command-line flags, and
the response fields `eagle3-train bench` reads from a real SGLang 0.5.23 server:
  POST /v1/chat/completions (stream): content deltas, then a chunk with `usage` and `sglext.spec_tokens_details`
       {spec_accept_rate, spec_accept_length, spec_num_correct_drafts, spec_num_proposed_drafts, spec_verify_ct,
        spec_correct_drafts_histogram} (only with `return_spec_tokens_details`), then `data: [DONE]`;
  GET  /server_info  internal_states[0].avg_spec_accept_length (cumulative); /v1/models; /health.
Its speculation is deterministic, so a test can predict every count: verify step i accepts
min(steps, i % (steps + 1)) draft tokens. Content token i is "t{i} "; with --diverge-at N a speculative server writes
"X{N} " there instead (a lossless failure, for the bench's exit status), and --token-delay-ms spaces the tokens out.
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def simulate(n_tokens: int, steps: int):
    """(verify_ct, correct drafts, histogram) for a completion of n_tokens."""
    hist = [0] * (steps + 1)
    tokens = verifies = correct = 0
    while tokens < n_tokens:
        j = min(steps, verifies % (steps + 1))
        hist[j] += 1
        correct += j
        tokens += j + 1
        verifies += 1
    return verifies, correct, hist


def send_json(handler: BaseHTTPRequestHandler, obj, code: int = 200) -> None:
    body = json.dumps(obj).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-path", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=30000)
    p.add_argument("--speculative-algorithm")
    p.add_argument("--speculative-draft-model-path")
    p.add_argument("--speculative-num-steps", type=int)
    p.add_argument("--speculative-eagle-topk", type=int)
    p.add_argument("--speculative-num-draft-tokens", type=int)
    p.add_argument("--diverge-at", type=int, default=-1)
    p.add_argument("--token-delay-ms", type=float, default=0.0)
    args, _ = p.parse_known_args()
    spec = args.speculative_algorithm == "EAGLE3"
    totals = {"tokens": 0, "verifies": 0}
    lock = threading.Lock()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path == "/health":
                return send_json(self, {})
            if self.path == "/v1/models":
                return send_json(self, {"data": [{"id": args.model_path}]})
            if self.path == "/server_info":
                al = totals["tokens"] / totals["verifies"] if totals["verifies"] else None
                return send_json(self, {"internal_states": [{"avg_spec_accept_length": al} if spec else {}],
                                        "version": "0.5.23"})
            send_json(self, {"error": "not found"}, 404)

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            n = int(req["max_tokens"])
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i in range(n):
                word = f"X{i} " if spec and i == args.diverge_at else f"t{i} "
                chunk = {"choices": [{"index": 0, "delta": {"content": word}}]}
                if args.token_delay_ms:
                    time.sleep(args.token_delay_ms / 1e3)
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            final = {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": n}}
            if spec and req.get("return_spec_tokens_details"):
                v, c, hist = simulate(n, args.speculative_num_steps)
                proposed = v * (args.speculative_num_draft_tokens - 1)
                final["sglext"] = {"spec_tokens_details": {
                    "spec_accept_rate": c / proposed, "spec_accept_length": n / v, "spec_num_correct_drafts": c,
                    "spec_num_proposed_drafts": proposed, "spec_verify_ct": v, "spec_correct_drafts_histogram": hist}}
                with lock:
                    totals["tokens"] += n
                    totals["verifies"] += v
            self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())

    ThreadingHTTPServer((args.host, args.port), H).serve_forever()


if __name__ == "__main__":
    main()
