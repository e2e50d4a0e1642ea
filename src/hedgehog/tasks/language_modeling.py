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

from hedgehog.attention import FeatureMap
from hedgehog.data.loading import IGNORE_INDEX
from hedgehog.tasks.optim import param_groups, warmup_cosine


class LanguageModelingTask(pl.LightningModule):
    """Wraps a model mapping input_ids -> (logits, caches) with an optimizer from config.

    The schedule is a linear warm-up over ``warmup_steps`` (a step count, or below 1 a fraction of
    the run's steps), then cosine decay to ``min_lr_ratio`` of the peak; the defaults make it one-cycle.
    ``weight_decay`` hits matrices only, and the feature maps' matrices only if ``decay_feature_maps``
    (Hedgehog's W starts at the identity: decay pulls it towards zero, not back to its start).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_steps: float = 0.3,
        min_lr_ratio: float = 0.0,
        weight_decay: float = 0.0,
        decay_feature_maps: bool = False,
    ) -> None:
        super().__init__()
        if warmup_steps < 0 or (warmup_steps >= 1 and warmup_steps != int(warmup_steps)):
            raise ValueError(
                f"warmup_steps must be a step count (0, 1, 2, ...) or a fraction of the run below 1, "
                f"got {warmup_steps}"
            )
        self.model = model
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.weight_decay = weight_decay
        self.decay_feature_maps = decay_feature_maps

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
        feature_maps = [m for m in self.model.modules() if isinstance(m, FeatureMap)]
        no_decay = [] if self.decay_feature_maps else [p for m in feature_maps for p in m.parameters()]
        trainable = (p for p in self.parameters() if p.requires_grad)
        optimizer = self.optimizer(param_groups(trainable, self.weight_decay, no_decay))
        total = int(self.trainer.estimated_stepping_batches)
        warmup = round(self.warmup_steps * total) if self.warmup_steps < 1 else int(self.warmup_steps)
        scheduler = warmup_cosine(optimizer, total, warmup, self.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
