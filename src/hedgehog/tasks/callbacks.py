"""Callbacks every run can use: the metric history that goes into the run record (for loss curves) and the
training throughput (tokens per second over all ranks)."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch


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
        """Resume from a checkpoint's history; but a checkpoint of this same run (testing from the best one
        restores the callbacks' state) holds a prefix of what is kept already, and must not cut it back."""
        saved = list(state_dict.get("history", []))
        if self.history[: len(saved)] != saved:
            self.history = saved


def batch_tokens(batch: Any) -> int | None:
    """Token positions in one rank's batch: the elements of its integer (batch, length) input ids, the
    first tensor of a tuple or list batch or ``input_ids`` of a dict one; None for other batches (images)."""
    if isinstance(batch, dict):
        ids = batch.get("input_ids")
    elif isinstance(batch, tuple | list) and batch:
        ids = batch[0]
    else:
        ids = None
    if isinstance(ids, torch.Tensor) and ids.dim() == 2 and not ids.is_floating_point():
        return ids.numel()
    return None


class Throughput(pl.Callback):
    """Training tokens per second over all ranks, logged as ``train/tokens_per_s`` (so the run record and
    its history carry it).

    Measured from the end of training batch ``warmup`` (compilation and the allocator's first steps left
    out) to the end of each later one, without the time spent in validation; the device is synchronised
    only where the window starts and where a value is logged (every ``every_n_steps`` batches). Tokens:
    ``batch_tokens`` of this rank's batch times the world size (equal batches on every rank); a run whose
    batches hold no token ids logs nothing.
    """

    def __init__(self, warmup: int = 5, every_n_steps: int = 10) -> None:
        if warmup < 0 or every_n_steps < 1:
            raise ValueError(f"need warmup >= 0 and every_n_steps >= 1, got {warmup} and {every_n_steps}")
        self.warmup, self.every_n_steps = warmup, every_n_steps
        self.started: float | None = None
        self.tokens = self.batches = self.seen = 0
        self.paused, self.validation_started = 0.0, None

    @staticmethod
    def _sync(trainer: pl.Trainer) -> None:
        device = trainer.strategy.root_device
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx
    ) -> None:
        tokens = batch_tokens(batch)
        if tokens is None:
            return
        self.seen += 1
        if self.started is None:
            if self.seen > self.warmup:
                self._sync(trainer)
                self.started, self.paused = time.perf_counter(), 0.0
            return
        self.tokens += tokens * trainer.world_size
        self.batches += 1
        if self.batches % self.every_n_steps == 0:
            self._sync(trainer)
            elapsed = time.perf_counter() - self.started - self.paused
            pl_module.log("train/tokens_per_s", self.tokens / elapsed, on_step=True, on_epoch=False)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.started is not None and not trainer.sanity_checking:
            self._sync(trainer)
            self.validation_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.validation_started is not None:
            self._sync(trainer)
            self.paused += time.perf_counter() - self.validation_started
            self.validation_started = None
