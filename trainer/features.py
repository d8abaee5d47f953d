"""Offline training: dump target features once, train from them many times.

Layout of a features directory:
  meta.json                 target, family, aux layer ids, sizes, sample count
  head.safetensors          the target's embedding and lm_head (to rebuild logits and init the draft)
  index.jsonl               one line per sample: key, id, source file:line, tokens
  samples/<key>.safetensors input_ids, loss_mask, positions, aux [T, 3H] and last_hidden [T, H] in bf16

Disk: (3 + 1) * H * 2 bytes per token, i.e. 8*H bytes (1 KiB/token at H=128, 32 KiB/token at H=4096). The dump is
resumable: existing sample files are kept.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .data import Sample
from .target import TargetFeatures

FORMAT = 1


def bytes_per_token(hidden: int, n_aux: int = 3, dtype_bytes: int = 2) -> int:
    return (n_aux + 1) * hidden * dtype_bytes + 2 * 8


def dump_features(target_path, samples: list[Sample], out_dir, aux_ids, progress: bool = True) -> Path:
    from tqdm.auto import tqdm
    from .target import Target
    out = Path(out_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    target = Target(target_path)
    hidden = int(target.embed_weight().shape[1])
    tokens = sum(s.num_tokens for s in samples)
    est = tokens * bytes_per_token(hidden, len(aux_ids))
    print(f"dumping {len(samples)} samples, {tokens} tokens: about {est / 2**20:.1f} MiB "
          f"({bytes_per_token(hidden, len(aux_ids))} bytes/token) into {out}")
    if not (out / "head.safetensors").exists():
        save_file({"embed_tokens": target.embed_weight().clone(), "lm_head": target.lm_head_weight().clone()},  # tied: 2 copies
                  str(out / "head.safetensors"))
    index = []
    for i, s in enumerate(tqdm(samples, desc="dump-features", unit="sample", disable=not progress)):
        key = f"{i:08d}"
        path = out / "samples" / f"{key}.safetensors"
        index.append({"key": key, "id": s.id, "where": s.where, "tokens": s.num_tokens})
        if path.exists():
            continue
        inputs = {"input_ids": s.input_ids[None], "attention_mask": torch.ones_like(s.input_ids)[None],
                  **s.mm_inputs}
        f = target.features(inputs, aux_ids)
        tmp = path.with_suffix(".tmp")
        save_file({"input_ids": s.input_ids, "loss_mask": s.loss_mask, "positions": f.positions.squeeze(-2),
                   "aux": f.aux[0].to(torch.bfloat16).contiguous(),
                   "last_hidden": f.last_hidden[0].to(torch.bfloat16).contiguous()}, str(tmp))
        os.replace(tmp, path)
    with open(out / "index.jsonl", "w") as fh:
        for row in index:
            fh.write(json.dumps(row) + "\n")
    meta = {"format": FORMAT, "target": str(Path(target_path).resolve()), "family": target.family.name,
            "aux_layer_ids": list(aux_ids), "hidden_size": hidden, "num_samples": len(samples), "tokens": tokens}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


class FeatureStore:
    def __init__(self, path):
        self.path = Path(path)
        meta = self.path / "meta.json"
        if not meta.exists():
            raise FileNotFoundError(f"{meta}: not found — create it with `eagle3-train dump-features`")
        self.meta = json.loads(meta.read_text())
        head = load_file(str(self.path / "head.safetensors"))
        self._embed, self._head = head["embed_tokens"], head["lm_head"]
        self.index = [json.loads(l) for l in (self.path / "index.jsonl").read_text().splitlines() if l.strip()]

    def check_target(self, target_cfg: dict, family) -> None:
        """The features must come from this target: same family, hidden size and vocab (the path may differ)."""
        meta, where = self.meta, self.path / "meta.json"
        hidden = int(family.text_config(target_cfg)["hidden_size"])
        vocab = int(family.text_config(target_cfg)["vocab_size"])
        problems = []
        if meta.get("family") != family.name:
            problems.append(f"family {meta.get('family')!r} != the target's {family.name!r}")
        if int(meta.get("hidden_size", hidden)) != hidden:
            problems.append(f"hidden_size {meta.get('hidden_size')} != the target's {hidden}")
        if int(self._head.shape[0]) != vocab:
            problems.append(f"lm_head rows {int(self._head.shape[0])} != the target's vocab_size {vocab}")
        if problems:
            raise SystemExit(f"{where}: these features were dumped from another target ({meta.get('target')}): "
                             f"{'; '.join(problems)}. Dump them again for this --target.")

    def embed_weight(self):
        return self._embed

    def lm_head_weight(self):
        return self._head

    def samples(self) -> list[Sample]:
        out = []
        for row in self.index:
            t = load_file(str(self.path / "samples" / f"{row['key']}.safetensors"))
            out.append(Sample(row["key"], t["input_ids"], t["loss_mask"].bool(), {}, row["where"]))
        return out

    def load(self, key: str) -> TargetFeatures:
        t = load_file(str(self.path / "samples" / f"{key}.safetensors"))
        pos = t["positions"]
        pos = pos[None] if pos.dim() == 1 else pos[:, None]          # [1, T] or [3, 1, T]
        return TargetFeatures(aux=t["aux"][None].float(), last_hidden=t["last_hidden"][None].float(), positions=pos,
                              head=self._head)
