"""`eagle3-train regenerate` against an OpenAI-compatible stub: text, image and audio conversations, every assistant
turn regenerated in order, media sent as data URIs and kept as file references, bad lines and failed requests
recorded (never lost), and a rerun resumes. The robustness cases (torn lines, duplicate ids, malformed answers,
retries, timeouts, several servers, the command line) are in test_regenerate_server.py."""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eagle3_plugin import fixtures
from eagle3_plugin.trainer.regenerate import RegenConfig, regenerate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_sglang_server import send_json  # noqa: E402


@pytest.fixture
def server():
    seen = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            send_json(self, {"data": [{"id": "stub-model"}]})

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(req)
            last = req["messages"][-1]["content"]
            text = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last)
            if "FAIL" in text:
                return send_json(self, {"error": "boom"}, 500)
            send_json(self, {"choices": [{"message": {"content": f"answer {len(req['messages'])}: {text}"}}]})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", seen
    srv.shutdown()


def test_regenerate_media_multiturn_errors_and_resume(tmp_path, server):
    url, seen = server
    img, wav = fixtures.images()[0], fixtures.audio()[0]
    rows = [
        {"id": "t", "conversations": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "old"},
                                      {"role": "user", "content": "again"}, {"role": "assistant", "content": "old"}]},
        {"id": "i", "conversations": [{"role": "user", "content": [{"type": "image", "image": str(img)},
                                                                   {"type": "text", "text": "read"}]},
                                      {"role": "assistant", "content": ""}]},
        {"id": "a", "conversations": [{"role": "user", "content": [{"type": "audio", "audio": str(wav)},
                                                                   {"type": "text", "text": "listen"}]},
                                      {"role": "assistant", "content": ""}]},
        {"id": "f", "conversations": [{"role": "user", "content": "FAIL please"}, {"role": "assistant", "content": ""}]},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n{not json\n"
                   + "\n".join(json.dumps(r) for r in rows[2:]) + "\n")
    out = tmp_path / "out" / "regen.jsonl"
    counts = regenerate(RegenConfig(input=str(src), output=str(out), base_url=url, concurrency=4, retries=0),
                        progress=False)
    assert counts == {"done_before": 0, "written": 3, "failed": 1, "bad_lines": 1, "torn_line_repaired": 0}
    got = {json.loads(l)["id"]: json.loads(l) for l in out.read_text().splitlines()}
    assert {r["id"]: r["source_line"] for r in got.values()} == {"t": 1, "i": 2, "a": 4}
    t = got["t"]["conversations"]
    assert t[1]["content"][0]["text"] == "answer 1: hello"
    assert t[3]["content"][0]["text"] == "answer 3: again"      # the 2nd turn saw the regenerated 1st one
    img_ref = got["i"]["conversations"][0]["content"][0]["image"]
    assert (out.parent / img_ref).resolve() == img.resolve()      # still a file reference, relative to the output
    kinds = {p["type"] for r in seen for m in r["messages"] if isinstance(m["content"], list) for p in m["content"]}
    assert {"image_url", "audio_url"} <= kinds
    assert any(p.get("image_url", {}).get("url", "").startswith("data:image/png;base64,")
               for r in seen for m in r["messages"] if isinstance(m["content"], list) for p in m["content"])
    errors = [json.loads(l) for l in (out.parent / "regen.jsonl.errors.jsonl").read_text().splitlines()]
    assert any(e["where"].endswith("in.jsonl:3") and "malformed JSON" in e["error"] for e in errors)
    assert any(e.get("id") == "f" and e["source_line"] == 5 and "500" in e["error"] for e in errors)

    n_requests = len(seen)
    again = regenerate(RegenConfig(input=str(src), output=str(out), base_url=url, retries=0), progress=False)
    assert again["done_before"] == 3 and again["written"] == 0 and again["failed"] == 1
    assert len(seen) == n_requests + 1                             # only the failed conversation is retried
    assert len(out.read_text().splitlines()) == 3
