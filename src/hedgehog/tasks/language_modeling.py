"""Next-token prediction: the task for associative recall and for language models trained from scratch.

The model maps input_ids to logits: the project's ``TransformerLM`` (returns ``(logits, caches)``) or a
Hugging Face causal LM (returns an output with ``.logits``), converted to any attention. Labels use
-100 for positions that carry no loss (associative recall scores only its query positions). Logs loss
and accuracy over labelled positions and, with ``perplexity``, val/test perplexity: exp of the mean
loss per labelled token over the whole split (token-weighted, synchronised across ranks).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from hedgehog.attention import FeatureMap
from hedgehog.data.loading import IGNORE_INDEX
from hedgehog.tasks.optim import param_groups, warmup_cosine


def logits_of(output) -> Tensor:
    """The logits of a model's output: a Hugging Face output's ``.logits`` or a tuple's first element."""
    return output.logits if hasattr(output, "logits") else output[0]


def causal_lm_inputs(batch) -> tuple[Tensor, Tensor | None, Tensor]:
    """(input_ids, attention_mask or None, labels aligned with the logits) of a causal-LM training batch.

    Two layouts: ``(input_ids, labels)`` token blocks (``hedgehog.data.language_modeling``), whose labels
    are already the next tokens; and dicts with ``input_ids``, ``attention_mask`` and ``labels``
    (``hedgehog.data.summarization``), whose labels sit on the tokens themselves (Hugging Face's
    convention): shifted here by one, so position t predicts label t + 1 and the last predicts nothing.
    """
    if isinstance(batch, dict):
        labels = batch["labels"]
        nothing = labels.new_full((labels.shape[0], 1), IGNORE_INDEX)
        return batch["input_ids"], batch.get("attention_mask"), torch.cat([labels[:, 1:], nothing], dim=1)
    input_ids, labels = batch
    return input_ids, None, labels


def next_token_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy over labelled positions (labels already aligned with the logits) and their count."""
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.flatten(), ignore_index=IGNORE_INDEX
    )
    return loss, (labels != IGNORE_INDEX).sum()


class SplitPerplexity(nn.Module):
    """exp(token-weighted mean loss) over an evaluation split, one accumulator per split."""

    def __init__(self) -> None:
        super().__init__()
        self.means = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})

    def update(self, split: str, loss: Tensor, tokens: Tensor) -> None:
        self.means[split].update(loss.detach(), weight=tokens)

    def compute(self, split: str) -> float:
        mean = float(self.means[split].compute())
        self.means[split].reset()
        return math.exp(min(mean, 50.0))


class LanguageModelingTask(pl.LightningModule):
    """Wraps a causal LM (input_ids -> logits) with an optimizer from config.

    The schedule is a linear warm-up over ``warmup_steps`` (a step count, or below 1 a fraction of
    the run's steps), then cosine decay to ``min_lr_ratio`` of the peak; the defaults make it one-cycle.
    ``weight_decay`` hits matrices only, and the feature maps' matrices only if ``decay_feature_maps``
    (Hedgehog's W starts at the identity: decay pulls it towards zero, not back to its start).
    ``save_pretrained``: a folder where a trained softmax Hugging Face model (its own weights, without
    the converted-attention modules) and the data module's tokenizer are saved at the end of training:
    what a later conversion starts from (the embedded stand-in of a pretrained checkpoint). Models with
    any other attention are not saved there (that format cannot hold their feature maps); their
    weights are in the run's checkpoints, which ``hedgehog-generate`` loads.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        warmup_steps: float = 0.3,
        min_lr_ratio: float = 0.0,
        weight_decay: float = 0.0,
        decay_feature_maps: bool = False,
        perplexity: bool = False,
        save_pretrained: str | None = None,
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
        self.perplexity = SplitPerplexity() if perplexity else None
        self.save_pretrained = save_pretrained

    def forward(self, input_ids: Tensor) -> Tensor:
        return logits_of(self.model(input_ids))

    def _step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        inputs, labels = batch
        scored = labels != IGNORE_INDEX
        if getattr(
            self.model, "selects_positions", False
        ):  # TransformerLM: the head on labelled positions only
            logits = logits_of(self.model(inputs, select=scored))
            labels, scored = labels[scored], scored[scored]
        else:
            logits = self(inputs)
        loss, tokens = next_token_loss(logits, labels)
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
        if self.perplexity is not None and split != "train":
            self.perplexity.update(split, loss, tokens)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        if self.perplexity is not None:
            self.log("val/ppl", self.perplexity.compute("val"), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        if self.perplexity is not None:
            self.log("test/ppl", self.perplexity.compute("test"))

    def on_fit_end(self) -> None:
        if not self.save_pretrained or self.trainer.fast_dev_run or not self.trainer.is_global_zero:
            return
        from hedgehog.attention import SoftmaxAttention
        from hedgehog.models.conversion import converted_layers
        from hedgehog.models.pretrained import save_pretrained_model

        if all(isinstance(layer.attention, SoftmaxAttention) for layer in converted_layers(self.model)):
            save_pretrained_model(self.model, self.save_pretrained, self.trainer.datamodule.tokenizer)

    def configure_optimizers(self):
        feature_maps = [m for m in self.model.modules() if isinstance(m, FeatureMap)]
        no_decay = [] if self.decay_feature_maps else [p for m in feature_maps for p in m.parameters()]
        trainable = (p for p in self.parameters() if p.requires_grad)
        optimizer = self.optimizer(param_groups(trainable, self.weight_decay, no_decay))
        total = int(self.trainer.estimated_stepping_batches)
        warmup = round(self.warmup_steps * total) if self.warmup_steps < 1 else int(self.warmup_steps)
        scheduler = warmup_cosine(optimizer, total, warmup, self.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
