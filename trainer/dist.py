"""Multi-process training: one process per device under ``torchrun`` (or ``deepspeed``), data parallel.

Every rank holds the (small) draft and the target; each optimizer step's conversations are split over the ranks and
the gradients summed, so N processes compute exactly the step one process would (up to float summation order).
Two ways to update the weights, behind one interface:
  * plain: AdamW over fp32 master weights, gradients all-reduced here, the norm clipped globally;
  * DeepSpeed ZeRO stage 1/2 (``--deepspeed zero2`` or a config file): DeepSpeed partitions the optimizer state
    and gradients over ranks and reduces them itself. ZeRO-3 is refused: it partitions parameters, which buys nothing
    for a one-layer draft and breaks calling its submodules directly.
Backends: NCCL on GPUs, gloo on CPU (what the CPU tests run).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as torch_dist

ZERO_PRESETS = {"zero1": 1, "zero2": 2}


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks of a few numbers (for logging)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        torch_dist.all_reduce(t)
        return t.tolist()


def setup(device: str = "auto", need_group: bool = False) -> Dist:
    """Rank, world and device from torchrun's environment; a process group when there are several processes (or
    when DeepSpeed needs one even for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if (world > 1 or need_group) and not torch_dist.is_initialized():
        if world == 1:
            from eagle3_plugin.launch import free_port
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(free_port()))
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("WORLD_SIZE", "1")
        torch_dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local, dev)


def deepspeed_config(spec: str, grad_clip: float, grad_accum: int) -> dict:
    """A DeepSpeed config from a preset name (zero1, zero2) or a JSON file; ours set the batch/clip fields."""
    if spec in ZERO_PRESETS:
        cfg = {"zero_optimization": {"stage": ZERO_PRESETS[spec]}}
    else:
        try:
            cfg = json.loads(Path(spec).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"--deepspeed {spec}: not a preset ({', '.join(ZERO_PRESETS)}) nor a readable JSON "
                             f"config ({e})") from None
    stage = (cfg.get("zero_optimization") or {}).get("stage", 0)
    if stage not in (0, 1, 2):
        raise SystemExit(f"--deepspeed {spec}: ZeRO stage {stage} is not supported (use 1 or 2): stage 3 "
                         f"partitions the parameters of a draft that is one layer")
    for key in ("optimizer", "scheduler", "fp16", "bf16"):
        if key in cfg:
            raise SystemExit(f"--deepspeed {spec}: remove {key!r}; eagle3-train owns the optimizer, the LR "
                             f"schedule and fp32 master weights")
    cfg.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=grad_accum, gradient_clipping=grad_clip)
    return cfg


class Updater:
    """backward / step / state for the plain and the DeepSpeed path."""

    def __init__(self, draft, lr: float, grad_clip: float, batch_size: int, dist: Dist,
                 deepspeed: str | None = None):
        self.draft, self.grad_clip, self.dist = draft, grad_clip, dist
        self.params = [p for p in draft.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
        self.engine = None
        if deepspeed:
            if batch_size % dist.world:
                raise SystemExit(f"--deepspeed needs --batch-size ({batch_size}) divisible by the number of "
                                 f"processes ({dist.world})")
            import deepspeed as ds
            self.engine, self.opt, _, _ = ds.initialize(
                model=draft, optimizer=self.opt, dist_init_required=False,
                config=deepspeed_config(deepspeed, grad_clip, batch_size // dist.world))

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def backward(self, loss: torch.Tensor, batch_size: int) -> None:
        if self.engine is not None:
            self.engine.backward(loss)     # DeepSpeed scales by 1/accumulation and averages over ranks
            self.engine.step()             # only updates at the accumulation boundary
        else:
            (loss / batch_size).backward()

    def pad_backwards(self, done: int, per_rank: int) -> None:
        """Make every rank's step the same: DeepSpeed finds the accumulation boundary by counting backward calls
        (one per conversation of this rank's share), and plain data parallelism all-reduces gradients every rank
        must have. Packed conversations (one call for several) and unusable ones (none) leave calls to make: these
        make them with a zero loss in the graph of every weight."""
        need = per_rank if self.engine is not None else 1
        for _ in range(max(0, need - done)):
            self.backward(sum(p.sum() for p in self.params) * 0.0, 1)

    def step(self) -> float:
        """Finish the optimizer step; returns the gradient norm (before clipping)."""
        if self.engine is not None:
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        if self.dist.world > 1:
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch_dist.all_reduce(p.grad)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(norm)

    # ---- DeepSpeed's share of the training state (the plain optimizer is saved by state.py as safetensors)
    def save_partitions(self, state_dir: Path) -> None:
        if self.engine is not None:       # every rank writes its optimizer partition
            self.engine.save_checkpoint(str(state_dir / "deepspeed"), tag="latest", save_latest=False)

    def load_partitions(self, state_dir: Path) -> None:
        """DeepSpeed's loader unpickles its files: state.py verified them against our manifest first."""
        self.engine.load_checkpoint(str(state_dir / "deepspeed"), tag="latest", load_module_strict=False)
