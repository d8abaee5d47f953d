"""The training loop: data -> vocab -> draft init -> AdamW over fp32 master weights -> TTT steps -> eval -> the best
draft written (atomically) in the format both engines load, plus an exact-resume training state.

Readable top to bottom, nanoGPT style. One optimizer step = `batch_size` conversations (gradient accumulation; each
conversation runs through the target alone, so padding never leaks into its hidden states). Under torchrun the
step's conversations are split over the processes (dist.py); rank 0 logs, evaluates and writes.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from eagle3_plugin.checkpoint import save_draft
from eagle3_plugin.families import family_for_target

from .data import LoadReport, Tokenizer, load_samples, token_frequencies
from .dist import Dist, Updater, setup
from .draft import init_draft
from .ttt import target_distribution, ttt_forward
from .vocab import coverage, draft_vocab_ids

STATE_DIR = "train_state"   # inside the output dir; engines only read config.json + model.safetensors


@dataclass
class TrainConfig:
    target: str
    output: str
    data: str | None = None                 # jsonl (online: features from the live target)
    features: str | None = None             # dumped features dir (offline)
    eval_data: str | None = None
    eval_fraction: float = 0.05             # held out from --data when no --eval-data is given
    max_steps: int = 0                      # 0 = num_epochs over the data
    num_epochs: int = 1
    max_length: int = 2048
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    batch_size: int = 1
    ttt_steps: int = 7
    ttt_decay: float = 0.8
    draft_vocab_size: int = 32000
    lm_head_init: str = "target"            # "target": rows of the target's lm_head; "random"
    grad_clip: float = 0.5
    seed: int = 0
    eval_every: int = 100
    save_every: int = 100
    log_dir: str | None = None              # tensorboard (default OUTPUT/train_state/tb)
    wandb_project: str | None = None
    progress: bool = True
    aux_layer_ids: list[int] | None = None
    device: str = "auto"                    # auto: cuda:LOCAL_RANK if available, else cpu
    deepspeed: str | None = None            # "zero1" | "zero2" | path to a DeepSpeed JSON config


@dataclass
class History:
    step: int = 0
    epoch: int = 0
    position: int = 0                       # index into this epoch's order
    best_al: float = -1.0
    best_step: int = 0
    evals: list = field(default_factory=list)
    order: list = field(default_factory=list)   # this epoch's sample order


def _lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


class FeatureSource:
    """Where target features come from: the live target (online) or a dump (offline). Same interface."""

    def __init__(self, cfg: TrainConfig, aux_ids, device: torch.device):
        self.aux_ids = list(aux_ids)
        self.offline = cfg.features is not None
        if self.offline:
            from .features import FeatureStore
            self.store = FeatureStore(cfg.features)
        else:
            from .target import Target
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32   # the target is frozen
            self.target = Target(cfg.target, dtype=dtype, device=str(device))

    def embed_and_head(self):
        if self.offline:
            return self.store.embed_weight(), self.store.lm_head_weight()
        return self.target.embed_weight(), self.target.lm_head_weight()

    def __call__(self, sample):
        if self.offline:
            return self.store.load(sample.id)
        inputs = {"input_ids": sample.input_ids[None], "attention_mask": torch.ones_like(sample.input_ids)[None],
                  **sample.mm_inputs}
        return self.target.features(inputs, self.aux_ids)


def _split(samples, cfg: TrainConfig):
    if cfg.eval_data or len(samples) < 20 or cfg.eval_fraction <= 0:
        return samples, []
    rng = random.Random(cfg.seed)
    idx = list(range(len(samples)))
    rng.shuffle(idx)
    n_eval = max(1, int(len(samples) * cfg.eval_fraction))
    ev = set(idx[:n_eval])
    return [s for i, s in enumerate(samples) if i not in ev], [samples[i] for i in sorted(ev)]


def train_step(draft, sample, f, cfg: TrainConfig):
    """The TTT loss of one conversation given its target features (forward only; the caller runs backward)."""
    dev = draft.fc.weight.device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    with autocast:   # bf16 compute on GPUs; the weights (and so the optimizer) stay fp32
        p, arg = target_distribution(f.last_hidden.to(dev), f.head, draft.draft_ids)
        return ttt_forward(draft, sample.input_ids[None].to(dev), f.aux.to(dev), p, arg, f.positions.to(dev),
                           sample.loss_mask[None].to(dev), cfg.ttt_steps, cfg.ttt_decay)


@torch.no_grad()
def evaluate(draft, samples, features, cfg: TrainConfig) -> dict:
    draft.eval()
    correct = [0] * cfg.ttt_steps
    scored = [0] * cfg.ttt_steps
    acc_sum = [0.0] * cfg.ttt_steps
    n0 = 0
    loss = 0.0
    for s in samples:
        _, st = train_step(draft, s, features(s), cfg)
        loss += st.loss * st.tokens
        n0 += st.tokens
        for i in range(cfg.ttt_steps):
            correct[i] += st.correct[i]
            scored[i] += st.scored[i]
            acc_sum[i] += st.accept_sum[i]
    draft.train()
    n0 = max(n0, 1)
    return {"loss": loss / n0, "acc": [c / max(s, 1) for c, s in zip(correct, scored)],
            "sim_al": {k: 1 + acc_sum[k - 1] / n0 for k in (1, 2, 3, 4, 5, 7) if k <= cfg.ttt_steps}}


# ------------------------------------------------------------------------------------------ exact resume
def _save_state(out: Path, draft, updater: Updater, hist: History, cfg: TrainConfig, dist: Dist) -> None:
    """Everything needed to continue exactly: fp32 weights, optimizer, RNG, data position. Built in a temp dir
    and renamed over the previous state, so a kill at any moment leaves one complete state."""
    from safetensors.torch import save_file
    state, tmp, old = out / STATE_DIR, out / f".{STATE_DIR}.tmp", out / f".{STATE_DIR}.old"
    if dist.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    updater.save(tmp)
    dist.barrier()
    if dist.main:
        save_file({k: v.detach().cpu().contiguous() for k, v in draft.state_dict().items()},
                  str(tmp / "draft_fp32.safetensors"))
        torch.save({"torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}, tmp / "rng.pt")
        (tmp / "history.json").write_text(json.dumps(asdict(hist)))
        (tmp / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
        if (state / "tb").exists():
            os.replace(state / "tb", tmp / "tb")
        shutil.rmtree(old, ignore_errors=True)
        if state.exists():
            os.replace(state, old)
        os.replace(tmp, state)
        shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def _load_state(out: Path, draft, updater: Updater) -> History:
    from safetensors.torch import load_file
    state = out / STATE_DIR
    need = ["draft_fp32.safetensors", "rng.pt", "history.json", "deepspeed" if updater.engine else "optimizer.pt"]
    missing = [n for n in need if not (state / n).exists()]
    if missing:
        raise SystemExit(f"{state}: cannot resume, the training state lacks {', '.join(missing)} (written by another "
                         f"eagle3-train version, or with{'out' if updater.engine else ''} --deepspeed). Delete "
                         f"{state} to start over, or pick another --output")
    draft.load_state_dict(load_file(str(state / "draft_fp32.safetensors")))
    updater.load(state)
    rng = torch.load(state / "rng.pt", weights_only=True)          # never unpickle arbitrary objects
    torch.set_rng_state(rng["torch_rng"])
    random.setstate(_to_tuple(rng["python_rng"]))
    return History(**json.loads((state / "history.json").read_text()))


def _to_tuple(x):
    return tuple(_to_tuple(i) for i in x) if isinstance(x, (list, tuple)) else x


def _write_best(out: Path, draft, extra_meta: dict):
    cfg = dict(draft.cfg)
    cfg["eagle3_plugin"] = {**cfg.get("eagle3_plugin", {}), **extra_meta}
    save_draft(out, cfg, draft.checkpoint_tensors(), keep=(STATE_DIR,))


# ------------------------------------------------------------------------------------------ the run
def train(cfg: TrainConfig) -> dict:
    from tqdm.auto import tqdm
    dist = setup(cfg.device, need_group=bool(cfg.deepspeed))
    out = Path(cfg.output)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    target_cfg = json.loads((Path(cfg.target) / "config.json").read_text())
    family = family_for_target(target_cfg)
    aux_ids = cfg.aux_layer_ids or list(family.default_aux_layer_ids(target_cfg))
    say = print if dist.main else (lambda *a, **k: None)

    # 1. data (offline: the samples were tokenised at dump time and are stored with the features)
    report = LoadReport()
    if cfg.features:
        from .features import FeatureStore
        store = FeatureStore(cfg.features)
        store.check_target(target_cfg, family)
        samples = store.samples()
        aux_ids = store.meta["aux_layer_ids"]
        report.read = report.kept = len(samples)
    else:
        tok = Tokenizer(cfg.target, family)
        samples = load_samples(cfg.data, tok, cfg.max_length, report, progress=cfg.progress and dist.main)
    eval_samples = []
    if cfg.eval_data and not cfg.features:
        eval_samples = load_samples(cfg.eval_data, tok, cfg.max_length, report, progress=cfg.progress and dist.main)
    train_samples, held = _split(samples, cfg)
    eval_samples = eval_samples or held
    for e in report.errors[:20]:
        say(f"warning: {e}")
    if len(report.errors) > 20:
        say(f"warning: ... and {len(report.errors) - 20} more bad lines")
    if not train_samples:
        raise SystemExit(f"no usable training conversations ({report.summary()})")
    if cfg.batch_size > len(train_samples):
        raise SystemExit(f"--batch-size {cfg.batch_size} is larger than the {len(train_samples)} training "
                         f"conversations")
    say(f"data: {report.summary()}; {len(train_samples)} train / {len(eval_samples)} eval")

    # 2. draft vocab from loss-masked token frequencies
    freq = token_frequencies(train_samples)
    vocab = int(family.text_config(target_cfg)["vocab_size"])
    ids = draft_vocab_ids(freq, vocab, cfg.draft_vocab_size)
    say(f"draft vocab: {ids.numel()} of {vocab} tokens, covering {coverage(freq, ids):.1%} of training targets")

    # 3. target features and the draft (identical on every rank: same seed)
    features = FeatureSource(cfg, aux_ids, dist.device)
    embed, head = features.embed_and_head()
    draft = init_draft(target_cfg, embed, head if cfg.lm_head_init == "target" else None, ids, seed=cfg.seed,
                       aux_layer_ids=tuple(aux_ids)).to(dist.device)
    updater = Updater(draft, cfg.lr, cfg.grad_clip, cfg.batch_size, dist, cfg.deepspeed)

    steps_per_epoch = max(1, len(train_samples) // cfg.batch_size)
    total = cfg.max_steps or steps_per_epoch * cfg.num_epochs
    hist = History()
    if (out / STATE_DIR).exists():
        hist = _load_state(out, draft, updater)
        say(f"resuming from {out / STATE_DIR} at step {hist.step} (epoch {hist.epoch}, sample {hist.position})")
    writer = _tensorboard(cfg, out) if dist.main else None
    wb = _wandb(cfg) if dist.main else None

    # 4. the loop
    bar = tqdm(total=total, initial=hist.step, desc="train", unit="step", disable=not (cfg.progress and dist.main),
               dynamic_ncols=True)
    tokens_seen, t0 = 0, time.perf_counter()
    draft.train()
    while hist.step < total:
        if not hist.order or hist.position + cfg.batch_size > len(hist.order):    # full batches only
            if hist.order:
                hist.epoch += 1
            hist.order = list(range(len(train_samples)))
            random.Random(cfg.seed + hist.epoch).shuffle(hist.order)
            hist.position = 0
        updater.set_lr(cfg.lr * _lr_at(hist.step, cfg, total))
        batch = hist.order[hist.position:hist.position + cfg.batch_size]
        hist.position += len(batch)
        stats = []
        for j in range(dist.rank, len(batch), dist.world):           # this rank's share of the step
            s = train_samples[batch[j]]
            loss, st = train_step(draft, s, features(s), cfg)
            updater.backward(loss, len(batch))
            stats.append(st)
            tokens_seen += s.num_tokens
        gnorm = updater.step()
        hist.step += 1
        k3 = min(2, cfg.ttt_steps - 1)
        n0, c0, s0, a3, loss_sum, toks = dist.sum([
            sum(st.tokens for st in stats), sum(st.correct[0] for st in stats), sum(st.scored[0] for st in stats),
            sum(st.accept_sum[k3] for st in stats), sum(st.loss * st.tokens for st in stats), tokens_seen])
        n0 = n0 or 1
        acc0, al3, loss_v = c0 / max(1, s0), 1 + a3 / n0, loss_sum / n0
        tps = toks / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{loss_v:.3f}", acc0=f"{acc0:.2f}", al3=f"{al3:.2f}", tok_s=f"{tps:.0f}")
        bar.update(1)
        if writer:
            for name, v in (("loss", loss_v), ("acc_0", acc0), ("sim_al_k3", al3), ("grad_norm", gnorm),
                            ("tokens_per_s", tps), ("lr", updater.opt.param_groups[0]["lr"])):
                writer.add_scalar(f"train/{name}", v, hist.step)
        if wb:
            wb.log({"train/loss": loss_v, "train/acc_0": acc0, "train/sim_al_k3": al3}, step=hist.step)
        last = hist.step >= total
        if hist.step % cfg.eval_every == 0 or hist.step % cfg.save_every == 0 or last:
            if writer:
                writer.close()              # the output folder is swapped below (see _TensorBoard)
            ev = None
            if dist.main and eval_samples and (hist.step % cfg.eval_every == 0 or last):
                ev = evaluate(draft, eval_samples, features, cfg)
                hist.evals.append({"step": hist.step, **ev})
                al = ev["sim_al"].get(3, ev["sim_al"][max(ev["sim_al"])])
                bar.write(f"eval step {hist.step}: loss {ev['loss']:.3f} acc {[round(a, 2) for a in ev['acc']]} "
                          f"sim AL(k=3) {al:.2f}")
                if al > hist.best_al:
                    hist.best_al, hist.best_step = al, hist.step
                    _write_best(out, draft, {"trained_steps": hist.step, "eval_sim_al_k3": round(al, 4)})
            elif dist.main and not eval_samples and (hist.step % cfg.save_every == 0 or last):
                hist.best_step = hist.step
                _write_best(out, draft, {"trained_steps": hist.step})
            if hist.step % cfg.save_every == 0 or last:
                _save_state(out, draft, updater, hist, cfg, dist)
            dist.barrier()
            if writer and ev:
                writer.add_scalar("eval/sim_al_k3", al, hist.step)
                for i, a in enumerate(ev["acc"]):
                    writer.add_scalar(f"eval/acc_{i}", a, hist.step)
    bar.close()
    if writer:
        writer.close()
    result = {"steps": hist.step, "best_step": hist.best_step, "best_eval_sim_al_k3": hist.best_al,
              "data": report.summary(), "output": str(out), "processes": dist.world}
    say(f"done: {json.dumps(result)}")
    return result


class _TensorBoard:
    """TensorBoard scalars under OUTPUT/train_state/tb. That folder is swapped atomically at every save, so the
    writer is closed before a save and reopened (a new event file; TensorBoard reads them all) on the next scalar."""

    def __init__(self, log_dir: str):
        from torch.utils.tensorboard import SummaryWriter   # noqa: F401  (fail here if tensorboard is missing)
        self.log_dir, self.writer = log_dir, None

    def add_scalar(self, name: str, value: float, step: int) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(self.log_dir)
        self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _tensorboard(cfg: TrainConfig, out: Path):
    try:
        return _TensorBoard(cfg.log_dir or str(out / STATE_DIR / "tb"))
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None


def _wandb(cfg: TrainConfig):
    if not cfg.wandb_project:
        return None
    import wandb
    return wandb.init(project=cfg.wandb_project, config=asdict(cfg))
