"""Streamed online data: peak memory and start-up time of `eagle3-train train` at N vs 10 N image conversations.

Each measurement runs in its own process (peak RSS is per process): a tiny Qwen3-VL target, N image conversations
(distinct question text, 64 distinct images, generated answer token ids as `regenerate` stores them), 3 training
steps. Start-up = process start to the end of the first optimizer step. Next to it, the same data loaded eagerly
(every conversation rendered and processed up front, pixel values kept: what training did before streaming) shows
what streaming saves. Prints the side-by-side table and the 10N / N ratios; writes results/streaming.json.

    python benchmarks/streaming.py [--small 1000] [--large 10000]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = 64

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
mode, target, data, out = sys.argv[1:5]
first = {}
if mode == "stream":
    from eagle3_plugin.trainer.config import TrainConfig
    from eagle3_plugin.trainer.log import RunLog
    from eagle3_plugin.trainer import loop
    step = RunLog.step
    def timed(self, n, scalars):
        first.setdefault("t", time.perf_counter() - t0)
        return step(self, n, scalars)
    RunLog.step = timed
    loop.train(TrainConfig(target=target, data=data, output=out, max_steps=3, eval_fraction=0.0, render_check=0,
                           progress=False, data_workers=0, draft_vocab_size=512, ttt_steps=3))
else:
    from eagle3_plugin.families import FAMILIES
    from eagle3_plugin.trainer.data import LoadReport, Tokenizer, load_samples
    samples = load_samples(data, Tokenizer(target, FAMILIES["qwen3_vl"]), 2048, LoadReport(), progress=False)
    first["t"] = time.perf_counter() - t0
print(json.dumps({"startup_s": first["t"], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_data(folder: Path, n: int, tokenizer) -> Path:
    """n image conversations over IMAGES distinct renders, each with its own question and answer ids."""
    from PIL import Image, ImageDraw
    imgs = folder / "imgs"
    imgs.mkdir(parents=True, exist_ok=True)
    for i in range(IMAGES):
        p = imgs / f"{i}.png"
        if not p.exists():
            im = Image.new("RGB", (256, 128), (255, 255, 255))
            d = ImageDraw.Draw(im)
            d.rectangle([8 + 3 * i, 16, 80 + 2 * i, 100], fill=((37 * i) % 256, (91 * i) % 256, (53 * i) % 256))
            d.text((120, 50), f"card {i}", fill=(0, 0, 0))
            im.save(p)
    path = folder / f"conversations-{n}.jsonl"
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with open(path, "w") as f:
        for k in range(n):
            text = f"card {k % IMAGES} shows a shape, entry {k}."
            answer = tokenizer(text, add_special_tokens=False)["input_ids"]
            f.write(json.dumps({"id": f"s{k}", "conversations": [
                {"role": "user", "content": [{"type": "image", "image": f"imgs/{k % IMAGES}.png"},
                                             {"type": "text", "text": f"What is on card number {k}?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": text}], "token_ids": answer + [stop]}]})
                    + "\n")
    return path


def measure(mode: str, target: Path, data: Path, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(target), str(data), str(out)], capture_output=True,
                       text=True, env=env, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(small: int, large: int, workdir: Path, cache: str | None = None, eager: bool = True) -> dict:
    from transformers import AutoTokenizer
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    target = cached_tiny_target("qwen3_vl", cache_dir=cache)
    tok = AutoTokenizer.from_pretrained(target)
    rows = {}
    for n in (small, large):
        data = write_data(workdir, n, tok)
        rows[n] = {"stream": measure("stream", target, data, workdir / f"draft-{n}-{time.time_ns()}")}
        if eager:
            rows[n]["eager"] = measure("eager", target, data, workdir / "unused")
    ratio = {m: {k: rows[large][m][k] / rows[small][m][k] for k in ("startup_s", "peak_rss_mb")}
             for m in rows[small]}
    return {"date": date.today().isoformat(), "commit": _commit(), "machine": f"{platform.machine()}, "
            f"{os.cpu_count()} cores", "small": small, "large": large,
            "runs": {str(n): r for n, r in rows.items()}, "ratio_large_over_small": ratio}


def _commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def table(res: dict | None = None) -> str:
    """The README's streaming block (from results/streaming.json unless given)."""
    res = res or json.loads((HERE / "results" / "streaming.json").read_text())
    s, l = str(res["small"]), str(res["large"])
    lines = [f"| data path | start-up {s} / {l} conv. (s) | ratio | peak RSS {s} / {l} (MB) | ratio |",
             "|---|---|---|---|---|"]
    for m, name in (("stream", "streamed (now)"), ("eager", "all in memory (before)")):
        if m not in res["runs"][s]:
            continue
        a, b, r = res["runs"][s][m], res["runs"][l][m], res["ratio_large_over_small"][m]
        lines.append(f"| {name} | {a['startup_s']:.1f} / {b['startup_s']:.1f} | {r['startup_s']:.2f} | "
                     f"{a['peak_rss_mb']:.0f} / {b['peak_rss_mb']:.0f} | {r['peak_rss_mb']:.2f} |")
    lines += ["", f"Run {res['date']}, commit {res['commit']}, {res['machine']}."]
    return "\n".join(lines)


def render_readme() -> None:
    readme = HERE.parent / "README.md"
    text = readme.read_text()
    head, rest = text.split("<!-- streaming:begin -->\n", 1)
    _, tail = rest.split("<!-- streaming:end -->", 1)
    readme.write_text(head + "<!-- streaming:begin -->\n" + table() + "\n<!-- streaming:end -->" + tail)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=10000)
    ap.add_argument("--workdir", default="/tmp/eagle3-streaming")
    ap.add_argument("--no-eager", action="store_true", help="skip the all-in-memory comparison")
    ap.add_argument("--results", default=str(HERE / "results"))
    ap.add_argument("--table", action="store_true", help="render the README block from results/streaming.json")
    args = ap.parse_args(argv)
    if args.table:
        render_readme()
        print(table())
        return 0
    res = run(args.small, args.large, Path(args.workdir), eager=not args.no_eager)
    print(table(res))
    out = Path(args.results) / "streaming.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
