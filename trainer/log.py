"""What a training run shows and records: the progress bar (loss, step-0 accuracy, simulated acceptance length,
tokens/s, ETA), TensorBoard scalars (OUTPUT/train_state/tb by default) and, if asked, Weights & Biases. Only rank 0
logs; the other ranks get a logger that does nothing."""
from __future__ import annotations

from dataclasses import asdict


class RunLog:
    def __init__(self, cfg, out, total: int, initial: int, main: bool):
        from tqdm.auto import tqdm
        self.main = main
        self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                        disable=not (cfg.progress and main))
        self.tb = self._tensorboard(cfg.log_dir or str(out / "train_state" / "tb")) if main else None
        self.wandb = self._wandb(cfg) if main and cfg.wandb_project else None

    @staticmethod
    def _tensorboard(log_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # noqa: BLE001 - TensorBoard is optional (the [train] extra)
            return None
        return SummaryWriter(log_dir)

    @staticmethod
    def _wandb(cfg):
        import wandb
        return wandb.init(project=cfg.wandb_project, config=asdict(cfg))

    def say(self, text: str) -> None:
        if self.main:
            self.bar.write(text)

    def step(self, step: int, scalars: dict[str, float]) -> None:
        """One optimizer step: the bar's postfix and every scalar under train/."""
        if not self.main:
            return
        self.bar.set_postfix(loss=f"{scalars['loss']:.3f}", acc0=f"{scalars['acc_0']:.2f}",
                             al3=f"{scalars['sim_al_k3']:.2f}", tok_s=f"{scalars['tokens_per_s']:.0f}")
        self.bar.update(1)
        self.scalars("train", step, scalars)

    def evaluation(self, step: int, ev: dict, al: float, train_al: float) -> None:
        self.say(f"eval step {step}: loss {ev['loss']:.3f} acc {[round(a, 2) for a in ev['acc']]} "
                 f"sim AL(k=3) {al:.2f} held out, {train_al:.2f} on training prompts (memorisation gap "
                 f"{train_al - al:+.2f})")
        self.scalars("eval", step, {"sim_al_k3": al, "train_sim_al_k3": train_al,
                                    "memorisation_gap_k3": train_al - al, "loss": ev["loss"],
                                    **{f"acc_{i}": a for i, a in enumerate(ev["acc"])}})

    def scalars(self, group: str, step: int, values: dict[str, float]) -> None:
        if self.tb is not None:
            for name, v in values.items():
                self.tb.add_scalar(f"{group}/{name}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"{group}/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
