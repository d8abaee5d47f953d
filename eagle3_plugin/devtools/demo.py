"""`eagle3-train demo`: the whole product on this machine, in a few minutes per family on CPU.

For each family: build a tiny real target (its text stack pretrained on the bundled corpus) -> prompts ->
`eagle3-train regenerate` through `vllm serve` -> `eagle3-train train` (online) -> `eagle3-train bench` on held-out
prompts in vLLM with and without the draft -> losslessness, acceptance length and speed ratio.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..families import FAMILIES


DEFAULT_FAMILIES = ("text", next(f.name for f in FAMILIES.values() if f.modality == "image"))


def run(workdir: str | os.PathLike = "eagle3-demo", families=DEFAULT_FAMILIES, k: int = 3) -> int:
    from ..bench import BenchConfig, run_bench
    from .pipeline import PipelineConfig, run_pipeline
    work = Path(workdir)
    rows = []
    for fam in families:
        print(f"\n=== {fam}: tiny target -> regenerate -> train -> serve  (work dir {work / fam})")
        p = run_pipeline(PipelineConfig.for_family(fam, workdir=str(work / fam)), cache_dir=str(work), progress=True)
        rep = run_bench(BenchConfig(engine="vllm", target=str(p["target"]), draft=str(p["online"]),
                                    data=str(p["heldout"]), num_prompts=64, output_len=64, num_spec_tokens=[k],
                                    max_model_len=1024, output=str(work / fam / "bench")))
        rows.append((fam, rep["runs"][-1]))
    print(f"\nfamily        lossless  accept_len(k={k})  speedup   draft")
    for fam, r in rows:
        print(f"{fam:<13} {'yes' if r['lossless'] else 'NO':<9} {r['acceptance_length']:>16.2f}  "
              f"{r['speedup']:>6.2f}x   {work / fam / 'draft'}")
    print("\nServe a draft yourself:\n  vllm serve TARGET --speculative-config "
          "'{\"method\":\"eagle3\",\"model\":\"DRAFT\",\"num_speculative_tokens\":3}'")
    return 0 if all(r["lossless"] for _, r in rows) else 1
