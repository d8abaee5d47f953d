"""`eagle3-train demo`: the whole product on this machine, end to end, in a few minutes on CPU.

For each target family: build a tiny real target -> make an EAGLE-3 draft for it with eagle3-train -> serve the
target in vLLM with and without the draft -> print whether greedy output is identical, the mean acceptance length
and the wall-clock ratio. (Training is added to this pipeline by the trainer; until then the draft is untrained.)
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _serve(target: Path, draft: Path | None, family: str, k: int):
    from vllm import LLM, SamplingParams
    limits = {"text": None, "qwen3_vl": {"image": 1, "video": 0}, "hunyuan_vl": {"image": 1},
              "qwen2_audio": {"audio": 1}}[family]
    spec = {"method": "eagle3", "model": str(draft), "num_speculative_tokens": k} if draft else None
    llm = LLM(model=str(target), speculative_config=spec, max_model_len=1024, enforce_eager=True, dtype="bfloat16",
              max_num_seqs=4, disable_log_stats=False, seed=0, limit_mm_per_prompt=limits)
    msgs = _prompts(family)
    sp = SamplingParams(temperature=0, max_tokens=48)
    t = time.perf_counter()
    outs = llm.chat(msgs, sp, use_tqdm=False)
    wall = time.perf_counter() - t
    metrics = {m.name: m for m in llm.get_metrics()}
    drafts = getattr(metrics.get("vllm:spec_decode_num_drafts"), "value", 0)
    accepted = getattr(metrics.get("vllm:spec_decode_num_accepted_tokens"), "value", 0)
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001
        pass
    return [list(o.outputs[0].token_ids) for o in outs], wall, (1 + accepted / drafts) if drafts else None


def _prompts(family: str):
    from eagle3_plugin import fixtures
    rows = [json.loads(line) for line in fixtures.CONVERSATIONS.read_text().splitlines()]
    want = {"text": "text", "qwen3_vl": "image", "hunyuan_vl": "image", "qwen2_audio": "audio"}[family]
    out = []
    for r in rows:
        user = r["conversations"][0]
        content = user["content"]
        kinds = {c["type"] for c in content} if isinstance(content, list) else {"text"}
        if (want == "text" and kinds == {"text"}) or want in kinds:
            msg = []
            for c in (content if isinstance(content, list) else [{"type": "text", "text": content}]):
                if c["type"] == "image":
                    msg.append({"type": "image_url", "image_url": {"url": fixtures.data_uri(c["image"])}})
                elif c["type"] == "audio":
                    msg.append({"type": "audio_url", "audio_url": {"url": fixtures.data_uri(c["audio"])}})
                else:
                    msg.append(c)
            out.append([{"role": "user", "content": msg}])
    return out[:4]


def run(workdir: str | os.PathLike = "eagle3-demo", families=("text", "qwen3_vl", "hunyuan_vl", "qwen2_audio"),
        k: int = 3) -> int:
    import torch
    from safetensors.torch import load_file
    from eagle3_plugin.checkpoint import save_draft
    from eagle3_plugin.trainer.draft import init_draft
    from eagle3_plugin.trainer.tiny import build_tiny_target
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    work = Path(workdir)
    rows = []
    for fam in families:
        target = work / f"tiny-{fam}"
        if not (target / "config.json").exists():
            print(f"[demo] building tiny {fam} target -> {target}")
            build_tiny_target(fam, target)
        tcfg = json.loads((target / "config.json").read_text())
        sd = load_file(str(target / "model.safetensors"))
        embed = next(v for k_, v in sd.items() if k_.endswith("embed_tokens.weight"))
        draft_dir = work / f"draft-{fam}"
        draft = init_draft(tcfg, embed, seed=0)
        save_draft(draft_dir, draft.cfg, draft.checkpoint_tensors())
        print(f"[demo] {fam}: serving without and with the EAGLE-3 draft {draft_dir}")
        base, t_base, _ = _serve(target, None, fam, k)
        spec, t_spec, al = _serve(target, draft_dir, fam, k)
        rows.append((fam, base == spec, al, t_base / t_spec))
    print("\nfamily        lossless  accept_len  speedup")
    for fam, same, al, sp in rows:
        print(f"{fam:<13} {'yes' if same else 'NO':<9} {al:>10.2f}  {sp:>6.2f}x")
    return 0 if all(r[1] for r in rows) else 1
