"""Callbacks every run can use: the metric history that goes into the run record (for loss curves)."""

from __future__ import annotations

import lightning.pytorch as pl


class MetricHistory(pl.Callback):
    """Keeps the scalar metrics logged along the run, so a record can draw its curves without the logs.

    After every ``every_n_steps`` training steps it keeps the ``train/*`` metrics, after every
    validation the ``val/*`` ones: ``history`` is a list of ``{"step": n, name: value, ...}``.
    """

    def __init__(self, every_n_steps: int = 10) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.history: list[dict[str, float]] = []

    def _keep(self, trainer: pl.Trainer, prefix: str) -> None:
        values = {
            k: round(float(v), 6)
            for k, v in trainer.callback_metrics.items()
            if k.startswith(prefix) and getattr(v, "numel", lambda: 1)() == 1
        }
        if values:
            self.history.append({"step": trainer.global_step, **values})

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step % self.every_n_steps == 0 and trainer.global_step > 0:
            self._keep(trainer, "train/")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._keep(trainer, "val/")

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
