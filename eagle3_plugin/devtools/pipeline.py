"""The product path in one call, for the demo, benchmarks and tests:
tiny target -> prompts -> `eagle3-train regenerate` through `vllm serve` -> online training -> a draft directory.
Every stage is skipped when its output exists (training resumes), so a rerun continues where it stopped."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# (prompts to regenerate, optimizer steps) per modality: a few minutes per family on 2 CPU cores
BUDGET = {"text": (240, 800), "image": (120, 250), "audio": (96, 250)}


@dataclass
class PipelineConfig:
    family: str
    workdir: str
    prompts: int = 240
    heldout: int = 12
    train_steps: int = 800
    pretrain_steps: int = 200
    max_tokens: int = 96
    target: str | None = None        # use this target instead of building a tiny one
    tiny_overrides: dict | None = None

    @classmethod
    def for_family(cls, family: str, **kw) -> "PipelineConfig":
        from ..families import FAMILIES
        prompts, steps = BUDGET[FAMILIES[family].modality]
        return cls(family=family, prompts=prompts, train_steps=steps, **kw)


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)
    return path


def regenerate_once(target, prompts: Path, work: Path, max_tokens: int, progress: bool = False) -> Path:
    """WORK/regen.jsonl: the prompts answered by the target through `vllm serve` (kept once complete)."""
    from ..launch import VllmServer
    from ..trainer.regenerate import RegenConfig, regenerate
    regen = work / "regen.jsonl"
    if not regen.exists():
        partial = work / "regen.partial.jsonl"
        with VllmServer(target, work / "regenerate-server.log",
                        extra=["--max-model-len", "1024", "--max-num-seqs", "16"]) as srv:
            counts = regenerate(RegenConfig(input=str(prompts), output=str(partial), base_url=srv.base_url,
                                            max_tokens=max_tokens, concurrency=16), progress=progress)
        if counts["failed"] or counts["bad_lines"]:
            raise RuntimeError(f"regeneration failed for {counts['failed']} conversations and refused "
                               f"{counts['bad_lines']} lines (see {partial}.errors.jsonl)")
        os.replace(partial, regen)
    return regen


def run_pipeline(cfg: PipelineConfig, cache_dir: str | None = None, progress: bool = False) -> dict:
    from .. import fixtures
    from ..checkpoint import save_draft
    from ..families import FAMILIES
    from ..models import model_config
    from ..trainer.config import TrainConfig
    from ..trainer.draft import init_draft
    from ..trainer.loop import train
    from .tiny import cached_tiny_target

    work = Path(cfg.workdir)
    target = Path(cfg.target) if cfg.target else cached_tiny_target(
        cfg.family, cache_dir=cache_dir or work, pretrain_steps=cfg.pretrain_steps, **(cfg.tiny_overrides or {}))
    mod = FAMILIES[cfg.family].modality
    prompts = work / "prompts.jsonl"
    if not prompts.exists():
        write_jsonl(prompts, fixtures.prompt_set(cfg.prompts, mod, seed=0))
    heldout = work / "heldout.jsonl"
    if not heldout.exists():
        write_jsonl(heldout, fixtures.prompt_set(cfg.heldout, mod, seed=99))
    regen = regenerate_once(target, prompts, work, cfg.max_tokens, progress)
    online = work / "draft"
    train(TrainConfig(target=str(target), data=str(regen), output=str(online), max_steps=cfg.train_steps,
                      eval_every=max(1, cfg.train_steps // 4), save_every=max(1, cfg.train_steps // 4),
                      progress=progress, max_length=1024))      # resumes, or returns at once if already done
    untrained = work / "draft-untrained"
    if not (untrained / "model.safetensors").exists():
        from safetensors.torch import load_file
        sd = load_file(str(target / "model.safetensors"))
        embed = next(v for k, v in sd.items() if k.endswith("embed_tokens.weight"))
        d = init_draft(model_config(target), embed, seed=0)
        save_draft(untrained, d.cfg, d.checkpoint_tensors())
    return {"target": target, "prompts": prompts, "heldout": heldout, "regen": regen, "online": online,
            "untrained": untrained, "work": work}
