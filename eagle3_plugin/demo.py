"""`eagle3-train demo`: the whole product on this machine, in a few minutes per family on CPU.

For each family: build a tiny real target (its text stack pretrained on the bundled corpus) -> prompts ->
`eagle3-train regenerate` through `vllm serve` -> `eagle3-train train` (online) -> serve held-out prompts in vLLM
with and without the draft -> print losslessness, acceptance length and speed ratio.
"""
from __future__ import annotations

import os
from pathlib import Path

STEPS = {"text": 800, "qwen3_vl": 500, "hunyuan_vl": 500, "qwen2_audio": 500}
PROMPTS = {"text": 240, "qwen3_vl": 120, "hunyuan_vl": 120, "qwen2_audio": 96}


def run(workdir: str | os.PathLike = "eagle3-demo", families=("text", "qwen3_vl"), k: int = 3) -> int:
    from .bench import chats_from_jsonl, compare_offline
    from .pipeline import PipelineConfig, run_pipeline
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    work = Path(workdir)
    rows = []
    for fam in families:
        print(f"\n=== {fam}: tiny target -> regenerate -> train -> serve  (work dir {work / fam})")
        p = run_pipeline(PipelineConfig(family=fam, workdir=str(work / fam), prompts=PROMPTS[fam],
                                        train_steps=STEPS[fam]), cache_dir=str(work), progress=True)
        r = compare_offline(p["target"], p["online"], chats_from_jsonl(p["heldout"]), k=k, max_tokens=64)
        rows.append((fam, r))
        print(f"[{fam}] lossless={r['lossless']} acceptance length={r['acceptance_length']:.2f} "
              f"per position={[round(x, 2) for x in r['acceptance_per_position']]} speedup={r['speedup']:.2f}x")
    print(f"\nfamily        lossless  accept_len(k={k})  speedup   draft")
    for fam, r in rows:
        print(f"{fam:<13} {'yes' if r['lossless'] else 'NO':<9} {r['acceptance_length']:>16.2f}  "
              f"{r['speedup']:>6.2f}x   {work / fam / 'draft'}")
    print("\nServe a draft yourself:\n  vllm serve TARGET --speculative-config "
          "'{\"method\":\"eagle3\",\"model\":\"DRAFT\",\"num_speculative_tokens\":3}'")
    return 0 if all(r["lossless"] for _, r in rows) else 1
