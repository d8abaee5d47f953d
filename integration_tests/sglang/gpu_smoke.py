#!/usr/bin/env python
"""GPU-ONLY smoke test of the user-facing SGLang command (not collected by pytest, not run in CI).

For each family it starts exactly what a user runs after ``pip install eagle3-plugin``:

    python -m sglang.launch_server --model-path TARGET --speculative-algorithm EAGLE3 \\
        --speculative-draft-model-path DRAFT --speculative-num-steps 5 --speculative-eagle-topk 4 \\
        --speculative-num-draft-tokens 16

waits for /health, sends greedy /generate requests with the bundled fixture media (image or audio, as data URIs,
prompt from the target's own chat template), reads SGLang's per-request ``meta_info.spec_accept_length`` and
``/server_info``'s ``avg_spec_accept_length``, prints one JSON line per family and exits non-zero if a server does not
come up, a request fails, or the mean accept length is below ``--min-accept``.

    # real targets with drafts written by eagle3-train
    python integration_tests/sglang/gpu_smoke.py --family qwen3_vl --target Qwen/Qwen3-VL-8B-Instruct \\
        --draft out/qwen3vl-draft --min-accept 1.5
    # plumbing only: tiny random targets + random drafts in our format (accept length ~1 is expected)
    python integration_tests/sglang/gpu_smoke.py --tiny --family all
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from eagle3_plugin.families import FAMILIES as TABLE

FAMILIES = tuple(TABLE)
SPEC_FLAGS = ["--speculative-algorithm", "EAGLE3", "--speculative-num-steps", "5", "--speculative-eagle-topk", "4",
              "--speculative-num-draft-tokens", "16"]
QUESTIONS = {"text": ["Explain how a binary search works.", "Tell me about bees.", "How do you make tea?"],
             "qwen3_vl": ["What is written in the image?", "Describe the image.", "Read the text."],
             "hunyuan_vl": ["Extract the text in the image.", "Read the receipt.", "What does the sign say?"],
             "qwen2_audio": ["What is said in the audio?", "Transcribe the audio.", "Describe the sound."]}


def _http(url: str, payload=None, timeout: float = 600):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode() or "null")


def _requests(family: str, target: str, n: int) -> list[dict]:
    """Native /generate payloads: the target's chat template with one media placeholder + the fixture media."""
    from transformers import AutoProcessor, AutoTokenizer
    from eagle3_plugin import fixtures
    try:
        templ = AutoProcessor.from_pretrained(target, trust_remote_code=True)
    except Exception:  # noqa: BLE001 - text targets have no processor
        templ = AutoTokenizer.from_pretrained(target, trust_remote_code=True)
    out = []
    for i in range(n):
        q = QUESTIONS[family][i % len(QUESTIONS[family])]
        media_key, media = None, None
        if family in ("qwen3_vl", "hunyuan_vl"):
            content = [{"type": "image"}, {"type": "text", "text": q}]
            media_key, media = "image_data", fixtures.data_uri(fixtures.images()[i % len(fixtures.images())])
        elif family == "qwen2_audio":
            content = [{"type": "audio", "audio": ""}, {"type": "text", "text": q}]
            media_key, media = "audio_data", fixtures.data_uri(fixtures.audio()[i % len(fixtures.audio())])
        else:
            content = q
        prompt = templ.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                           add_generation_prompt=True)
        payload = {"text": prompt, "sampling_params": {"max_new_tokens": 96, "temperature": 0}}
        if media_key:
            payload[media_key] = [media]
        out.append(payload)
    return out


# head_dim 64: GPU attention kernels do not take the CPU tests' head_dim 32
TINY_GPU = dict(hidden_size=256, head_dim=64, num_heads=4, num_kv_heads=2, intermediate_size=512)


def _tiny(family: str, work: Path) -> tuple[str, str]:
    """A tiny target and a random draft in our checkpoint format (plumbing only)."""
    import torch
    from eagle3_plugin.checkpoint import build_draft_config, expected_shapes, save_draft
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    target = cached_tiny_target(family, **TINY_GPU)
    draft = work / f"draft-{family}"
    cfg = build_draft_config(json.loads((target / "config.json").read_text()))
    g = torch.Generator().manual_seed(0)
    tensors = {k: (torch.ones(s) if k.endswith("norm.weight") else torch.randn(s, generator=g) * 0.02)
               for k, s in expected_shapes(cfg).items()}
    save_draft(draft, cfg, tensors)
    return str(target), str(draft)


def run_family(family: str, target: str, draft: str, port: int, n: int, extra: list[str], log_dir: Path,
               startup_timeout: float) -> dict:
    cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", target,
           "--speculative-draft-model-path", draft, *SPEC_FLAGS, "--host", "127.0.0.1", "--port", str(port),
           "--trust-remote-code", *extra]
    log_path = log_dir / f"sglang-{family}.log"
    print(f"[gpu_smoke] {family}: {' '.join(cmd)}\n[gpu_smoke] log: {log_path}", flush=True)
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    result = {"family": family, "target": target, "draft": draft}
    try:
        t0 = time.time()
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode}; see {log_path}")
            try:
                urllib.request.urlopen(base + "/health", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.time() - t0 > startup_timeout:
                    raise RuntimeError(f"server not healthy after {startup_timeout:.0f}s; see {log_path}")
                time.sleep(3)
        result["startup_s"] = round(time.time() - t0, 1)
        lengths, texts = [], []
        for payload in _requests(family, target, n):
            r = _http(base + "/generate", payload)
            meta = r.get("meta_info", {})
            lengths.append(float(meta.get("spec_accept_length") or 0.0))
            texts.append(r.get("text", "")[:80])
        result["spec_accept_length"] = lengths
        result["mean_accept_length"] = round(sum(lengths) / max(len(lengths), 1), 3)
        try:
            info = _http(base + "/server_info")
            states = info.get("internal_states") or [{}]
            result["server_avg_spec_accept_length"] = states[0].get("avg_spec_accept_length")
        except Exception as e:  # noqa: BLE001
            result["server_info_error"] = str(e)
        result["sample_outputs"] = texts
        plugin_lines = [ln.strip() for ln in open(log_path, errors="replace") if "eagle3" in ln.lower()]
        result["plugin_log"] = plugin_lines[:20]
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        except Exception:  # noqa: BLE001
            os.killpg(server.pid, signal.SIGKILL)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="all", help=f"one of {', '.join(FAMILIES)} or 'all' (with --tiny)")
    ap.add_argument("--target", help="target model path or Hub id")
    ap.add_argument("--draft", help="draft directory written by eagle3-train")
    ap.add_argument("--tiny", action="store_true", help="tiny random targets + random drafts (plumbing only)")
    ap.add_argument("--port", type=int, default=30123)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--min-accept", type=float, default=1.0,
                    help="fail if the mean spec_accept_length is below this (1.0 = only check the plumbing)")
    ap.add_argument("--startup-timeout", type=float, default=1800)
    ap.add_argument("--log-dir", default=None)
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after '--': extra launch_server arguments")
    args = ap.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    families = FAMILIES if args.family == "all" else (args.family,)
    if not args.tiny and (len(families) != 1 or not args.target or not args.draft):
        ap.error("give --family F --target T --draft D, or use --tiny")
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="eagle3-sgl-smoke-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    status = 0
    for i, fam in enumerate(families):
        target, draft = _tiny(fam, log_dir) if args.tiny else (args.target, args.draft)
        try:
            res = run_family(fam, target, draft, args.port + i, args.requests, extra, log_dir, args.startup_timeout)
            res["ok"] = res["mean_accept_length"] >= args.min_accept
        except Exception as e:  # noqa: BLE001
            res = {"family": fam, "ok": False, "error": f"{type(e).__name__}: {e}"}
        status |= 0 if res["ok"] else 1
        print(json.dumps(res), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
