"""`eagle3-train bench` against SGLang-shaped servers: the SGLang path (launching one server per tree configuration,
or using a running one) run end to end against tests/fake_sglang_server.py, which speaks SGLang 0.5.23's fields
with a deterministic acceptance pattern, so every number in the report can be checked exactly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fake_sglang_server import simulate  # noqa: E402

N_PROMPTS, OUT_LEN = 3, 12


@pytest.fixture(scope="module")
def text_target(tmp_path_factory):
    import os
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    return cached_tiny_target("text", cache_dir=os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("c"))


def _bench(args, out, status=0):
    r = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "bench", *args, "--output", str(out),
                        "--num-prompts", str(N_PROMPTS), "--output-len", str(OUT_LEN)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == status, r.stdout[-3000:] + r.stderr[-3000:]
    rep, md = json.loads((out / "report.json").read_text()), (out / "report.md").read_text()
    return (rep, md, r.stdout) if status == 0 else (rep, md, r.stdout, r.stderr)


def test_sglang_tree_sweep_report(tmp_path, text_target):
    rep, md, _ = _bench(["--engine", "sglang", "--target", str(text_target), "--draft", str(text_target),
                         "--steps", "2", "3", "--topk", "1", "4", "--draft-tokens", "8",
                         "--server-cmd", f"{sys.executable} {HERE / 'fake_sglang_server.py'}",
                         "--server-arg=--token-delay-ms=1"], tmp_path / "r")
    runs = {r["label"]: r for r in rep["runs"]}
    assert list(runs) == ["baseline", "2-1-8", "2-4-8", "3-1-8", "3-4-8"]
    assert "counts" not in runs["baseline"] and runs["baseline"]["output_tokens"] == N_PROMPTS * OUT_LEN
    for label, r in runs.items():
        if label == "baseline":
            continue
        steps = r["config"]["steps"]
        v, c, hist = simulate(OUT_LEN, steps)
        counts = r["counts"]
        assert counts["verifies"] == N_PROMPTS * v and counts["accepted"] == N_PROMPTS * c
        assert counts["proposed"] == N_PROMPTS * v * (8 - 1)
        assert counts["histogram"] == [N_PROMPTS * h for h in hist]
        assert counts["per_pos"] == [N_PROMPTS * sum(hist[i + 1:]) for i in range(steps)]
        assert r["acceptance_length"] == pytest.approx(1 + c / v)
        assert r["acceptance_rate"] == pytest.approx(c / (v * 7))
        assert counts["rate_cap"] == pytest.approx(steps / 7)
        assert counts["engine_reported_al"] == pytest.approx(OUT_LEN / v)       # /server_info, cumulative
        assert r["lossless"] is True and r["speedup"] > 0 and r["speedup_bound"] == r["acceptance_length"]
        assert r["prefill_latency_s"]["p50"] <= r["e2e_latency_s"]["p50"]
    for r in runs.values():                 # streamed timings: the fake server spaces its tokens 1 ms apart
        assert r["ttft_s"] == r["prefill_latency_s"] and r["server_version"] == "0.5.23"
        assert 0.0009 < r["tpot_s"]["mean"] < r["e2e_latency_s"]["mean"]
        assert 0.0009 < r["itl_s"]["p50"] and r["itl_s"]["mean"] < r["e2e_latency_s"]["mean"]
        assert set(r["latency_notes"]) == {"ttft_s", "tpot_s", "itl_s"}
    env = rep["environment"]
    import eagle3_plugin
    import torch
    assert env["plugin"] == eagle3_plugin.__version__ and env["torch"] == torch.__version__
    assert env["engine"]["name"] == "sglang" and env["engine"]["server_reported"] == ["0.5.23"]
    assert env["device"]["type"] in ("cpu", "cuda", "rocm") and env["device"]["cpu_count"] >= 1
    assert f"torch {torch.__version__}, eagle3-plugin {eagle3_plugin.__version__}, device: " in md
    assert "TTFT p50 s | TPOT mean ms | ITL mean ms" in md and "NOT LOSSLESS" not in md
    assert "`topk` is not the tree width" in md and "acceptance LENGTH" in md and "| 3-4-8 |" in md
    assert (tmp_path / "r" / "report.png").stat().st_size > 10_000
    assert (tmp_path / "r" / "report-tree.png").stat().st_size > 10_000     # steps x topk heat-map


def test_sglang_running_server(tmp_path, text_target):
    from eagle3_plugin.launch import Subprocess, free_port
    port = free_port()
    cmd = [sys.executable, str(HERE / "fake_sglang_server.py"), "--model-path", "m", "--port", str(port),
           "--speculative-algorithm", "EAGLE3", "--speculative-num-steps", "4", "--speculative-eagle-topk", "1",
           "--speculative-num-draft-tokens", "5"]
    with Subprocess(cmd, tmp_path / "log", f"http://127.0.0.1:{port}/health"):
        rep, _, out = _bench(["--engine", "sglang", "--url", f"http://127.0.0.1:{port}", "--no-plot"], tmp_path / "r")
    (run,) = rep["runs"]
    v, c, hist = simulate(OUT_LEN, 4)
    assert run["counts"]["verifies"] == N_PROMPTS * v and run["counts"]["histogram"] == [N_PROMPTS * h for h in hist]
    assert "speedup" not in run          # no baseline server given: nothing to compare against
    assert "| eagle3 |" in out


def test_bad_dataset_name_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", "bench", "--engine", "sglang",
                        "--url", "http://127.0.0.1:9", "--dataset", "nope", "--output", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown dataset 'nope'" in r.stderr and "--data" in r.stderr


def test_sglang_outputs_differ_exit_status(tmp_path, text_target):
    """Greedy, and the speculative server writes another word at token 5: the bench still writes its reports, then
    exits with status 1 naming the run, the prompt and where the outputs first differ."""
    rep, md, _, err = _bench(["--engine", "sglang", "--target", str(text_target), "--draft", str(text_target),
                              "--steps", "2", "--topk", "1", "--draft-tokens", "4", "--no-plot",
                              "--server-cmd", f"{sys.executable} {HERE / 'fake_sglang_server.py'}",
                              "--server-arg=--diverge-at=5"], tmp_path / "r", status=1)
    base, spec = rep["runs"]
    assert base.get("lossless") is None and spec["lossless"] is False
    m = spec["first_mismatch"]
    assert (m["prompt_index"], m["prompts"], m["unit"]) == (0, N_PROMPTS, "character")
    assert m["position"] == len("t0 t1 t2 t3 t4 ") and (m["baseline"], m["speculative"]) == ("t", "X")
    assert m["prompt"] and m["baseline_context"].startswith("t0 t1 t2 t3 t4 t5 t6 ")
    assert m["speculative_context"].startswith("t0 t1 t2 t3 t4 X5 t6 ")
    assert f"2-1-4: NOT LOSSLESS: under greedy decoding its output differs from the baseline's on prompt 1 of " \
           f"{N_PROMPTS} ({m['prompt']!r}), first at output character 15" in err
    assert "exit status 1: 1 speculative run(s) not lossless" in err and "**2-1-4: NOT LOSSLESS" in md


# ------------------------------------------------------------- report code fed by hand (no engine, no server)
def _run(label, outputs, spec=True, **kw):
    from eagle3_plugin.bench import Run, SpecCounts
    return Run(label, {}, len(outputs), sum(len(o) for o in outputs), 1.0, [0.1] * len(outputs),
               [0.5] * len(outputs), outputs, SpecCounts(verifies=4, proposed=12, accepted=6) if spec else None, **kw)


CHATS = [[{"role": "user", "content": "Say hi."}],
         [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:..."}},
                                       {"type": "text", "text": "What is in this   picture?"}]}]]


def test_token_mismatch_names_prompt_and_first_token():
    from eagle3_plugin.bench import first_difference, lossless_failures, summarise
    base = _run("baseline", [[1, 2, 3], [4, 5, 6, 7]], spec=False)
    good, bad = _run("k=1", [[1, 2, 3], [4, 5, 6, 7]]), _run("k=3", [[1, 2, 3], [4, 5, 9, 7]])
    decode = lambda ids: {6: " cat", 9: " dog"}[ids[0]]  # noqa: E731
    rows = [summarise(r, base, greedy=True, chats=CHATS, decode=decode) for r in (base, good, bad)]
    assert rows[1]["lossless"] is True and "first_mismatch" not in rows[1]
    m = rows[2]["first_mismatch"]
    assert m == {"prompt_index": 1, "prompts": 2, "prompt": "[image] What is in this picture?", "unit": "token",
                 "position": 2, "baseline": 6, "speculative": 9, "baseline_text": " cat", "speculative_text": " dog"}
    (msg,) = lossless_failures({"runs": rows})
    assert msg == ("k=3: NOT LOSSLESS: under greedy decoding its output differs from the baseline's on prompt 2 of "
                   "2 ('[image] What is in this picture?'), first at output token 2: baseline 6 ' cat' vs "
                   "speculative 9 ' dog'")
    # not greedy: nothing is compared, nothing fails
    assert "lossless" not in summarise(bad, base, greedy=False) and not lossless_failures(
        {"runs": [summarise(bad, base, greedy=False)]})
    # a shorter output differs where it ends; a missing one is named as such
    short = first_difference([[1, 2, 3]], [[1, 2]])
    assert (short["position"], short["baseline"], short["speculative"]) == (2, 3, "<end of output>")
    assert first_difference([[1], [2]], [[1]])["why"] == "the speculative run has no output for this prompt"


def test_offline_bench_exit_status_and_report(tmp_path, text_target, monkeypatch, capsys):
    """`eagle3-train bench --engine vllm` end to end with the engine replaced by recorded runs (one lossless, one
    not): report.json has the environment, the latency fields with their notes, and the mismatch decoded with the
    target's tokenizer; the command exits 1 and says which prompt and token."""
    from eagle3_plugin.bench import vllm_offline
    from eagle3_plugin.entry_points import cli
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(text_target)
    a, b = tok.encode(" the cat sat"), tok.encode(" the dog sat")
    itl, note = vllm_offline.itl_between((1.0, 10), (1.5, 20))
    assert itl == {"mean": 0.05, "p50": None, "p90": None, "count": 10} and "mean only" in note
    assert vllm_offline.itl_between(None, None)[0] is None
    notes = {**vllm_offline.LATENCY_NOTES, "itl_s": note}

    def fake_run_all(cfg, chats, family):
        return [_run("baseline", [a, a, a], spec=False, tpot_s=[0.02] * 3, itl_summary=itl, latency_notes=notes),
                _run("k=2", [a, a, a], tpot_s=[0.01] * 3, itl_summary=itl, latency_notes=notes),
                _run("k=3", [a, a, b], tpot_s=[0.01] * 3, itl_summary=None,
                     latency_notes={**notes, "itl_s": vllm_offline.itl_between(None, None)[1]})]
    monkeypatch.setattr(vllm_offline, "run_all", fake_run_all)
    out = tmp_path / "r"
    status = cli.main(["bench", "--engine", "vllm", "--target", str(text_target), "--draft", str(text_target),
                       "--num-prompts", "3", "--num-spec-tokens", "2", "3", "--output", str(out), "--no-plot"])
    err = capsys.readouterr().err
    assert status == 1
    rep = json.loads((out / "report.json").read_text())
    base, k2, k3 = rep["runs"]
    assert k2["lossless"] is True and k3["lossless"] is False
    j = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    m = k3["first_mismatch"]
    assert (m["prompt_index"], m["position"], m["baseline"], m["speculative"]) == (2, j, a[j], b[j])
    assert m["baseline_text"] == tok.decode([a[j]]) and m["speculative_text"] == tok.decode([b[j]])
    assert f"k=3: NOT LOSSLESS: under greedy decoding its output differs from the baseline's on prompt 3 of 3 (" \
           f"{m['prompt']!r}), first at output token {j}: baseline {a[j]} {tok.decode([a[j]])!r}" in err
    assert k2["tpot_s"]["mean"] == 0.01 and k2["itl_s"]["mean"] == 0.05 and k2["ttft_s"]["p50"] == 0.1
    assert k3["itl_s"] is None and k3["latency_notes"]["itl_s"].startswith("null: ")
    env = rep["environment"]
    import importlib.metadata as md
    import eagle3_plugin
    assert env["engine"] == {"name": "vllm", "installed": md.version("vllm"), "server_reported": None}
    assert env["plugin"] == eagle3_plugin.__version__ and env["torch"] == md.version("torch")
    assert env["transformers"] == md.version("transformers") and env["python"] and env["device"]["cpu"]
    # the same runs, all lossless: exit status 0
    monkeypatch.setattr(vllm_offline, "run_all", lambda cfg, chats, family: fake_run_all(cfg, chats, family)[:2])
    assert cli.main(["bench", "--engine", "vllm", "--target", str(text_target), "--draft", str(text_target),
                     "--num-prompts", "3", "--output", str(tmp_path / "r2"), "--no-plot"]) == 0


def test_offline_latencies_from_vllm_timestamps():
    """TTFT / e2e / TPOT from the engine-core timestamps vLLM attaches to each RequestOutput."""
    import types
    from eagle3_plugin.bench.vllm_offline import _latencies
    out = lambda n, s, f, l: types.SimpleNamespace(  # noqa: E731
        metrics=types.SimpleNamespace(scheduled_ts=s, first_token_ts=f, last_token_ts=l),
        outputs=[types.SimpleNamespace(token_ids=list(range(n)))])
    prefill, e2e, tpot = _latencies([out(5, 10.0, 10.5, 12.5), out(1, 10.0, 11.0, 11.0)])
    assert prefill == [0.5, 1.0] and e2e == [2.5, 1.0] and tpot == [0.5]     # one token: no TPOT


def test_concurrency_sweep_compares_each_run_with_its_own_baseline(tmp_path, text_target):
    """--max-num-seqs 1 3: every configuration at each concurrency (the launched server's limit and the client's
    parallel requests), speedup against the baseline at the same concurrency, and the tree heat-map per panel."""
    rep, md, _ = _bench(["--engine", "sglang", "--target", str(text_target), "--draft", str(text_target),
                         "--steps", "2", "3", "--topk", "1", "--draft-tokens", "8", "--max-num-seqs", "1", "3",
                         "--server-cmd", f"{sys.executable} {HERE / 'fake_sglang_server.py'}",
                         "--server-arg=--token-delay-ms=1"], tmp_path / "r")
    runs = {r["label"]: r for r in rep["runs"]}
    assert list(runs) == ["baseline @1", "2-1-8 @1", "3-1-8 @1", "baseline @3", "2-1-8 @3", "3-1-8 @3"]
    for label, r in runs.items():
        seqs = int(label.split("@")[1])
        assert r["config"]["max_num_seqs"] == seqs
        if not label.startswith("baseline"):
            base = runs[f"baseline @{seqs}"]
            assert r["speedup"] == pytest.approx(r["tokens_per_s"] / base["tokens_per_s"])
            assert r["lossless"] is True
    logs = sorted(p.name for p in (tmp_path / "r" / "server-logs").iterdir())
    assert "sglang-2-1-8@3.log" in logs and "sglang-baseline@1.log" in logs
    from eagle3_plugin.bench import BenchConfig
    from eagle3_plugin.bench.server import SglangServer
    cmd = SglangServer(BenchConfig(engine="sglang", target="T"), tmp_path / "log", max_num_seqs=3).command(1)
    assert cmd[cmd.index("--max-running-requests") + 1] == "3"
    assert (tmp_path / "r" / "report-tree.png").stat().st_size > 10_000
    assert "| 3-1-8 @3 |" in md


def test_delivered_tokens_per_verify_leaves_out_tokens_accepted_past_the_end():
    """Two answers of 3 and 4 tokens, 4 verify steps that accepted 6 draft tokens: the engine's acceptance length says
    2.5 tokens per verify, but only the 5 tokens after each request's first reached the output."""
    from eagle3_plugin.bench import summarise
    base = _run("baseline", [[1, 2, 3], [4, 5, 6, 7]], spec=False)
    row = summarise(_run("k=3", [[1, 2, 3], [4, 5, 6, 7]]), base, greedy=True)
    assert row["acceptance_length"] == 2.5
    assert row["delivered_tokens_per_verify"] == (7 - 2) / 4
