"""The training loop, top to bottom: setup -> data -> draft vocab -> draft init -> AdamW over fp32 master weights ->
TTT steps -> eval -> the best draft written in the format both engines load, plus a crash-proof resumable state.

One optimizer step = `batch_size` conversations, run through the target and the draft one by one or, with
`--batch-tokens`, several per forward (batching.py: the gradient is the same). Under torchrun the step's conversations are split over the
processes (dist.py); rank 0 logs, evaluates and writes. The recipe is config.py, the state state.py, logging log.py.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from eagle3_plugin.checkpoint import save_draft
from eagle3_plugin.families import family_for_target
from eagle3_plugin.models import model_config, resolve_model
from eagle3_plugin.outputs import claim_output_dir, record_written

from . import state
from .config import TrainConfig, identity_differences, run_identity
from .data import DataFileError, LoadReport
from .dist import Updater, setup
from .draft import init_draft, init_draft_aux_ids, init_from_draft
from .batching import check_budget, micro_batches
from .evaluate import batch_loss, distinct, evaluate, headline_al, memorisation_probe, split
from .log import RunLog
from .source import FeatureSource
from .vocab import coverage, draft_vocab_ids


class TrainingDiverged(SystemExit):
    """A non-finite loss or weight: stop before anything non-finite is saved."""


def lr_factor(step: int, cfg: TrainConfig, total: int) -> float:
    """Linear warm-up, then cosine from 1 down to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def train(cfg: TrainConfig) -> dict:
    """One run, start to finish. Longer than the house's ~60 lines on purpose: like nanoGPT's train.py it reads top
    to bottom, one numbered stage after another, and each stage calls into the room that owns the details."""
    # ---- 0. setup: processes, seeds, the target, and an output folder that is ours (or refused before any work)
    dist = setup(cfg.device, need_group=bool(cfg.deepspeed))
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    target_path = resolve_model(cfg.target)
    try:
        target_cfg = model_config(target_path)
    except (OSError, ValueError) as e:      # an unreadable config.json (the message names it)
        raise SystemExit(str(e)) from None
    try:
        family = family_for_target(target_cfg)
    except ValueError as e:                 # an architecture we do not support
        raise SystemExit(f"{cfg.target}: {e}") from None
    for data in (cfg.data, cfg.eval_data):
        if data and not Path(data).is_file():     # before the output folder is touched
            why = "is a folder; give the conversations jsonl file" if Path(data).is_dir() else "no such data file"
            raise DataFileError(f"{data}: {why}")
    check_budget(cfg.batch_tokens, cfg.max_length)
    if cfg.init_draft:                      # fine-tuning reads the aux layers the draft was trained on
        cfg = replace(cfg, aux_layer_ids=list(init_draft_aux_ids(target_cfg, cfg.init_draft, cfg.aux_layer_ids)))
    out = Path(cfg.output)
    if dist.main:
        reads = (target_path, cfg.data, cfg.eval_data, cfg.features, cfg.init_draft)
        claim_output_dir(out, "draft", overwrite=cfg.overwrite, protect=[p for p in reads if p])
        record_written(out, state.STATE_DIR)
    dist.barrier()
    resume, passed_over = state.newest(out)
    identity = run_identity(cfg)
    if resume is not None:
        differs = identity_differences(state.stored_config(resume).get("identity", {}), identity)
        if differs:
            raise state.StateError(f"{out}: holds a different run ({'; '.join(differs)}). Re-run with the same "
                                   f"data, target and recipe to resume, or pass --overwrite to start over")

    # ---- 1. data: an index of the conversations (online; they are encoded when a step needs them) or the stored
    #        samples (offline: tokenised at dump time)
    report = LoadReport()
    source = FeatureSource(cfg, family, target_cfg, dist.device, report, progress=cfg.progress and dist.main)
    train_items, held = split(source.train_items, 0 if cfg.eval_data else cfg.eval_fraction, cfg.seed)
    eval_items = held
    if source.eval_items:                 # --eval-data: each prompt once, none that is also a training prompt
        eval_items = distinct(source.eval_items, {s.content_key for s in train_items})
        dropped = len(source.eval_items) - len(eval_items)
        if dropped and dist.main:
            print(f"warning: --eval-data: {dropped} of {len(source.eval_items)} conversations left out of the "
                  f"evaluation (a repeated prompt, or one that is also in --data)")
    probe = memorisation_probe(train_items, min(64, max(1, len(eval_items))), cfg.seed) if eval_items else []
    if cfg.init_draft and list(source.aux_ids) != list(cfg.aux_layer_ids):
        raise SystemExit(f"--features {cfg.features}: dumped with aux layers {source.aux_ids}, but --init-draft "
                         f"{cfg.init_draft} reads {cfg.aux_layer_ids}; dump again with --aux-layer-ids "
                         f"{' '.join(map(str, cfg.aux_layer_ids))}")
    log_errors(report, dist.main)
    if not train_items:
        raise SystemExit(f"no usable training conversations ({report.summary()})")
    if cfg.batch_size > len(train_items):
        raise SystemExit(f"--batch-size {cfg.batch_size} is larger than the {len(train_items)} training "
                         f"conversations")

    # ---- 2. draft vocab from loss-masked token frequencies
    freq = source.token_frequencies(train_items)
    vocab = int(family.text_config(target_cfg)["vocab_size"])
    ids = draft_vocab_ids(freq, vocab, cfg.draft_vocab_size)

    # ---- 3. the draft (identical on every rank: same seed, or --init-draft's weights) and its optimizer;
    #        resume if a state is there
    embed, head = source.embed_and_head()
    if cfg.init_draft:                      # its weights and its draft vocab
        draft = init_from_draft(target_cfg, embed, cfg.init_draft, tuple(source.aux_ids),
                                cfg.vllm_runner).to(dist.device)
        ids = draft.draft_ids.cpu()
    else:
        draft = init_draft(target_cfg, embed, head if cfg.lm_head_init == "target" else None, ids, seed=cfg.seed,
                           aux_layer_ids=tuple(source.aux_ids), vllm_runner=cfg.vllm_runner).to(dist.device)
    updater = Updater(draft, cfg.lr, cfg.grad_clip, cfg.batch_size, dist, cfg.deepspeed)
    total = cfg.max_steps or max(1, len(train_items) // cfg.batch_size) * cfg.num_epochs
    hist = state.History()
    if resume is not None:
        hist = state.load(resume, draft, updater)
    if dist.main:
        state.clean(out, keep=resume)      # half-written or superseded states a kill left behind
    log = RunLog(cfg, out, total, hist.step, dist.main)
    for why in passed_over:
        log.say(f"warning: skipped an incomplete training state: {why}")
    log.say(f"data: {report.summary()}; {len(train_items)} train / {len(eval_items)} eval")
    log.say(f"draft vocab: {ids.numel()} of {vocab} tokens, covering {coverage(freq, ids):.1%} of training targets")
    if resume is not None:
        log.say(f"resuming from {resume} at step {hist.step} (epoch {hist.epoch}, sample {hist.position})")
    saved_config = {"train_config": asdict(cfg), "identity": identity}

    # ---- 4. the loop
    tokens_seen, t0 = 0, time.perf_counter()
    shares = None                 # this rank's samples of each step left in the epoch, encoded ahead
    draft.train()
    while hist.step < total:
        # the step's conversations: full batches only, a new shuffled order every epoch
        if not hist.order or hist.position + cfg.batch_size > len(hist.order):
            if hist.order:
                hist.epoch += 1
            hist.order = list(range(len(train_items)))
            random.Random(cfg.seed + hist.epoch).shuffle(hist.order)
            hist.position = 0
            shares = None
        if shares is None:
            shares = rank_shares(source, train_items, hist, cfg.batch_size, dist)
        batch = hist.order[hist.position:hist.position + cfg.batch_size]
        hist.position += len(batch)

        # forward + backward over this rank's share, then one optimizer step
        updater.set_lr(cfg.lr * lr_factor(hist.step, cfg, total))
        stats = []
        for group in micro_batches(next(shares), cfg.batch_tokens):
            got = source.batch(group)
            if got is None:               # bad feature shards: reported, counted, skipped
                continue
            loss, st = batch_loss(draft, *got, cfg)
            if not torch.isfinite(loss):
                where = ", ".join(s.where for s in got[0])
                raise TrainingDiverged(diverged_message(hist.step + 1, float(loss.detach()), cfg, where))
            updater.backward(loss, len(batch))
            stats.append(st)
            tokens_seen += sum(s.num_tokens for s in got[0])
        updater.pad_backwards(len(stats), len(range(dist.rank, len(batch), dist.world)))
        gnorm = updater.step()
        hist.step += 1
        bad = [n for n, p in draft.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(diverged_message(hist.step, float("nan"), cfg, f"weights {', '.join(bad[:3])}"))

        # logging: numbers summed over ranks
        k3 = min(2, cfg.ttt_steps - 1)
        n0, c0, s0, a3, loss_sum, toks = dist.sum([
            sum(st.tokens for st in stats), sum(st.correct[0] for st in stats), sum(st.scored[0] for st in stats),
            sum(st.accept_sum[k3] for st in stats), sum(st.loss * st.tokens for st in stats), tokens_seen])
        n0 = n0 or 1
        log.step(hist.step, {"loss": loss_sum / n0, "acc_0": c0 / max(1, s0), "sim_al_k3": 1 + a3 / n0,
                             "grad_norm": gnorm, "tokens_per_s": toks / (time.perf_counter() - t0),
                             "lr": updater.opt.param_groups[0]["lr"]})

        # eval -> the best draft into OUTPUT; the resumable state every save_every steps and at the end
        last = hist.step >= total
        if dist.main and (hist.step % cfg.eval_every == 0 or last):
            if eval_items:
                ev = evaluate(draft, eval_items, source, cfg)
                al = headline_al(ev)
                train_al = headline_al(evaluate(draft, probe, source, cfg))
                hist.evals.append({"step": hist.step, **ev, "train_sim_al_k3": train_al})
                log.evaluation(hist.step, ev, al, train_al)
                if al > hist.best_al:
                    hist.best_al, hist.best_step, hist.best_train_al = al, hist.step, train_al
                    write_draft(out, draft, {"trained_steps": hist.step, "eval_sim_al_k3": round(al, 4),
                                             "train_sim_al_k3": round(train_al, 4),
                                             "memorisation_gap_k3": round(train_al - al, 4)})
            else:
                hist.best_step = hist.step
                write_draft(out, draft, {"trained_steps": hist.step})
        if hist.step % cfg.save_every == 0 or last:
            state.save(out, hist.step, draft, updater, hist, saved_config, dist)
    log.close()
    result = {"steps": hist.step, "best_step": hist.best_step, "best_eval_sim_al_k3": hist.best_al,
              "best_train_sim_al_k3": hist.best_train_al,
              "data": report.summary(), "output": str(out), "processes": dist.world}
    if dist.main:
        print(f"done: {json.dumps(result)}")
    return result


def rank_shares(source, items: list, hist: state.History, batch_size: int, dist):
    """This rank's samples for each full step left in the epoch, in step order: the source encodes them ahead
    (online: in DataLoader workers), and each process encodes only its own share."""
    starts = range(hist.position, len(hist.order) - batch_size + 1, batch_size)     # read now, not at first next()
    mine = [[items[hist.order[p + j]] for j in range(dist.rank, batch_size, dist.world)] for p in starts]
    stream = source.stream([x for step in mine for x in step])
    return ([s for _ in step for s in next(stream)] for step in mine)


def write_draft(out: Path, draft, extra_meta: dict) -> None:
    cfg = dict(draft.cfg)
    cfg["eagle3_plugin"] = {**cfg.get("eagle3_plugin", {}), **extra_meta}
    save_draft(out, cfg, draft.checkpoint_tensors())


def diverged_message(step: int, loss: float, cfg: TrainConfig, where: str) -> str:
    return (f"training diverged at step {step}: loss {loss} ({where}); nothing non-finite was saved. The likely "
            f"cause is the learning rate: lower --lr (now {cfg.lr}), or keep --grad-clip small (now {cfg.grad_clip})")


def log_errors(report: LoadReport, main: bool, shown: int = 20) -> None:
    if not main:
        return
    for e in report.errors[:shown]:
        print(f"warning: {e}")
    if len(report.errors) > shown:
        print(f"warning: ... and {len(report.errors) - shown} more bad lines (all counted in the summary)")
