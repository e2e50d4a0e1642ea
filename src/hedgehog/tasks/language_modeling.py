"""Next-token prediction: the task for associative recall and for language models.

Labels use -100 for positions that carry no loss (associative recall scores only its
query positions). Logs loss and accuracy over labelled positions.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hedgehog.data.loading import IGNORE_INDEX
from hedgehog.tasks.optim import param_groups, warmup_cosine


class LanguageModelingTask(pl.LightningModule):
    """Wraps a model mapping input_ids -> (logits, caches) with an optimizer from config."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model(input_ids)[0]

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        inputs, labels = batch
        logits = self(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        scored = labels != IGNORE_INDEX
        accuracy = (logits.argmax(-1)[scored] == labels[scored]).float().mean()
        on_step = split == "train"
        self.log(
            f"{split}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=not on_step, sync_dist=not on_step
        )
        self.log(
            f"{split}/acc",
            accuracy,
            prog_bar=True,
            on_step=on_step,
            on_epoch=not on_step,
            sync_dist=not on_step,
        )
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer(
            param_groups((p for p in self.parameters() if p.requires_grad), self.weight_decay)
        )
        scheduler = warmup_cosine(optimizer, int(self.trainer.estimated_stepping_batches), self.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
