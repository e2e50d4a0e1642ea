"""Conversion of a pretrained model (Hedgehog's two-stage recipe), in one Lightning run of two stages.

Stage 1 (``distill_steps`` steps): attention distillation. Only the feature maps train, with one
AdamW over all of them, on the layer-averaged distillation loss against each layer's own softmax
attention on the same q, k (causally masked in a decoder); the layers output softmax, so every
layer sees the original model's inputs. The frozen model's forward runs without gradients: each
layer records its q, k, v detached, and the loss is computed in query chunks, so stage 1 holds
O(chunk x T) weights per layer, never the T x T matrices of every layer at once. ``distill_layers``:
``all`` builds every layer's loss graph before one backward (the joint loss); a number n builds and
back-propagates n layers at a time from the recorded tensors (1: layer by layer), which gives the
same gradients and the same step while holding one block's graph (``distillation_backward``): the
memory-bounded stage 1 of a model too large for the joint graph. Skipped when the feature maps
have no parameters (1+ELU, ReLU, Performer, cosFormer, exp(t), Taylor-2: nothing to distil) or
when ``distill_steps`` is 0 (T2R, trained end to end).
Stage 2 (``finetune_steps`` steps): every weight trains on the task loss; with LoRA attached to
the model (``causal_lm(lora=...)``) only the adapters (and the feature maps, if LoRA was asked to
train them).

``objective`` says what the model and the task are:

- ``classification`` (BERT-family encoders, ViT, the project's own ``TransformerClassifier``): the
  model is built in ``configure_model`` from a constructor taking ``num_labels``
  (``hedgehog.models.pretrained.sequence_classifier`` or ``image_classifier``, or the classifier's
  class), with the number the datamodule reports; batches are dicts whose entries other than
  ``labels`` are the model's keyword inputs (``input_ids``/``attention_mask`` for text,
  ``pixel_values`` for images, ``input_ids_2``/``attention_mask_2`` for a second document); the
  model returns logits or an output holding ``.logits``; the loss is cross-entropy (MSE for a
  one-output regression task such as STS-B); evaluation logs the task's metrics
  (``<split>/<metric>``, x100) and ``<split>/score``, their mean (GLUE's per-task score).
- ``causal_lm`` (GPT-2, Llama-family decoders): the constructor takes no argument
  (``hedgehog.models.pretrained.causal_lm``); training batches are language-modelling
  ``(input_ids, labels)`` blocks or summarisation dicts (``input_ids``, ``attention_mask``,
  ``labels`` on the summary), read the one way by ``causal_lm_inputs``; the loss is next-token
  cross-entropy; evaluation on such batches logs ``<split>/loss`` and ``<split>/ppl``
  (token-weighted). Evaluation batches that carry ``references`` (the summarisation data's
  left-padded prompts) are generation batches: the model writes a summary of each prompt, greedy,
  at most ``max_new_tokens`` tokens, from its own cache (a converted linear model decodes from its
  fixed-size state), and the split logs ROUGE-1/2/L F1 x100 (``<split>/rouge1``, ``rouge2``,
  ``rougeL``) and the mean words per summary (``<split>/summary_words``). After a test the task's
  ``predictions`` hold every summary with its id and references (the run record keeps them).

Training from scratch is stage 2 alone: a model that was not converted (its own attention, e.g. the
LRA classifier) has no stage 1, and every weight, feature maps included, trains on the task loss.
With ``distill_steps`` and ``finetune_steps`` both 0 nothing trains: the run evaluates the converted
model as it is (the zero-shot row of a table). ``save_weights`` writes the finetuned model's weights, without feature
maps: what the softmax run (BERT-FT) hands to the conversions. ``save_feature_maps`` writes the
trained feature maps at the end (and, with ``feature_map_snapshots``, after those steps as
``<stem>-step<N>.pt``), for the analyses. ``save_converted`` writes the converted model at the end
(``hedgehog.models.saving.save_converted``: what trained, beside the base model's name and the attention's
config, both from ``converted_from``), a folder that ``hedgehog-generate`` and ``load_converted`` load.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional import (
    f1_score,
    matthews_corrcoef,
    pearson_corrcoef,
    spearman_corrcoef,
)

from hedgehog.models.conversion import (
    CHILD,
    distillation_backward,
    feature_map_parameters,
    feature_map_state_dict,
    is_converted,
    set_stage,
)
from hedgehog.models.parallel import full_state_dict, shard
from hedgehog.models.saving import save_converted
from hedgehog.tasks.language_modeling import SplitPerplexity, causal_lm_inputs, logits_of, next_token_loss
from hedgehog.tasks.metrics import rouge
from hedgehog.tasks.optim import param_groups, warmup_cosine

OBJECTIVES = ("classification", "causal_lm")


def task_metrics(
    names: tuple[str, ...], predictions: Tensor, labels: Tensor, num_labels: int
) -> dict[str, float]:
    """GLUE's metrics x100: accuracy, binary F1, Matthews correlation, Pearson and Spearman (regression)."""
    out = {}
    for name in names:
        if name == "accuracy":
            value = (predictions == labels).float().mean()
        elif name == "f1":
            value = f1_score(predictions, labels, task="binary")
        elif name == "matthews":
            task = "binary" if num_labels == 2 else "multiclass"
            value = matthews_corrcoef(predictions, labels, task=task, num_classes=max(num_labels, 2))
        elif name == "pearson":
            value = pearson_corrcoef(predictions.float(), labels.float())
        elif name == "spearman":
            value = spearman_corrcoef(predictions.float(), labels.float())
        else:
            raise ValueError(f"unknown metric {name!r}; expected accuracy, f1, matthews, pearson or spearman")
        out[name] = 100.0 * float(value)
    return out


class ConversionTask(pl.LightningModule):
    """Distil the feature maps (stage 1), then finetune everything on the task (stage 2)."""

    def __init__(
        self,
        model: Callable[..., nn.Module],
        optimizer: Callable[..., torch.optim.Optimizer],
        distill_optimizer: Callable[..., torch.optim.Optimizer],
        distill_steps: int = 0,
        finetune_steps: int = 100,
        distill_loss: str = "xent",
        warmup_steps: int = 0,
        weight_decay: float = 0.01,
        gradient_clip_val: float = 1.0,
        save_weights: str | None = None,
        save_feature_maps: str | None = None,
        feature_map_snapshots: tuple[int, ...] = (),
        objective: str = "classification",
        distill_layers: str | int = "all",
        max_new_tokens: int = 128,
        save_converted: str | None = None,
        converted_from: dict[str, Any] | None = None,
    ) -> None:
        """``converted_from``: ``base_model`` (the name ``load_converted`` loads the base from) and
        ``attention`` (the Hydra node that built the converted attention), kept as config: what
        ``save_converted`` records."""
        super().__init__()
        if distill_steps < 0 or finetune_steps < 0:
            raise ValueError(
                f"need distill_steps >= 0 and finetune_steps >= 0; got {distill_steps}, {finetune_steps}"
            )
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
        self.objective = objective
        self.build_model = model
        self.model: nn.Module | None = None
        self.optimizer, self.distill_optimizer = optimizer, distill_optimizer
        self.distill_steps, self.finetune_steps = distill_steps, finetune_steps
        self.distill_loss, self.warmup_steps, self.weight_decay = distill_loss, warmup_steps, weight_decay
        self.gradient_clip_val = gradient_clip_val
        self.save_weights, self.save_feature_maps = save_weights, save_feature_maps
        self.feature_map_snapshots = set(feature_map_snapshots)
        if self.feature_map_snapshots and not save_feature_maps:
            raise ValueError(
                "feature_map_snapshots needs save_feature_maps, the path the snapshots are named after"
            )
        if distill_layers != "all" and not (isinstance(distill_layers, int) and distill_layers >= 1):
            raise ValueError(
                f"distill_layers must be 'all' (every layer's loss in one graph) or a positive number of "
                f"layers distilled at a time (1: layer by layer); got {distill_layers!r}"
            )
        self.distill_layers = None if distill_layers == "all" else distill_layers
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        if save_converted and not (converted_from or {}).get("base_model"):
            raise ValueError(
                "save_converted needs converted_from.base_model, the name of the pretrained model the run "
                "converts (model.pretrained), which load_converted loads again; a model built fresh from a "
                "config has none: save it with save_pretrained_model first and convert it from that folder"
            )
        self.save_converted, self.converted_from = save_converted, converted_from
        self.automatic_optimization = False
        self._outputs: dict[str, list[tuple[Tensor, Tensor]]] = {"val": [], "test": []}
        self._summaries: dict[str, list[dict[str, Any]]] = {"val": [], "test": []}
        self._loss_batches = {"val": 0, "test": 0}
        self.predictions: list[dict[str, Any]] = []
        self.perplexity = SplitPerplexity() if objective == "causal_lm" else None

    def configure_model(self) -> None:
        if self.model is not None:
            return
        datamodule = self.trainer.datamodule
        if self.objective == "classification":
            self.num_labels, self.metric_names = datamodule.num_labels, tuple(datamodule.metrics)
            self.model = self.build_model(num_labels=self.num_labels)
            _check_vocab(self.model, datamodule)
        else:
            self.model = self.build_model()
            datamodule.check_model_vocab(self.model.config.vocab_size)
        self.converted = is_converted(self.model)
        if not feature_map_parameters(self.model):
            self.distill_steps = 0
        if self.device_mesh is not None:  # trainer=fsdp (ModelParallelStrategy): shard over the data ranks
            shard(self.model, self.device_mesh["data_parallel"])

    @property
    def stage(self) -> str:
        return "distill" if self.global_step < self.distill_steps else "finetune"

    def forward(self, batch) -> Tensor:
        if self.objective == "causal_lm":
            input_ids, attention_mask, _ = causal_lm_inputs(batch)
            return logits_of(self.model(input_ids=input_ids, attention_mask=attention_mask))
        output = self.model(**{k: v for k, v in batch.items() if k != "labels"})
        return output if isinstance(output, Tensor) else output.logits

    def labels(self, batch) -> Tensor:
        return causal_lm_inputs(batch)[2] if self.objective == "causal_lm" else batch["labels"]

    def task_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.objective == "causal_lm":
            return next_token_loss(logits, labels)[0]
        if self.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels)

    def on_train_start(self) -> None:
        self.model.train()  # from_pretrained returns the model in eval mode; finetuning uses its dropout
        if self.converted:
            set_stage(self.model, self.stage)

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        if self.distill_steps + self.finetune_steps == 0:  # evaluation only (the zero-shot row)
            self.trainer.should_stop = True
            return None
        stage = self.stage
        if stage == "finetune" and self.global_step == self.distill_steps and self.converted:
            set_stage(self.model, "finetune")
        opt, sched = self._stage_optimizer(stage)
        opt.zero_grad(set_to_none=True)
        if stage == "distill":
            with torch.no_grad():  # the teacher's forward: every layer records its q, k, v (detached)
                self(batch)
            loss = distillation_backward(
                self.model, self.distill_loss, self.distill_layers, self.manual_backward
            )
        else:
            loss = self.task_loss(self(batch), self.labels(batch))
            self.manual_backward(loss)
        self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        opt.step()
        sched.step()
        self.log(f"train/{stage}_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        if self.global_step >= self.distill_steps + self.finetune_steps:
            self.trainer.should_stop = True
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.global_step in self.feature_map_snapshots and not self.trainer.fast_dev_run:
            path = Path(self.save_feature_maps)
            maps = feature_map_state_dict(self.model, full_state_dict(self.model))
            if self.trainer.is_global_zero:
                _save(maps, str(path.with_name(f"{path.stem}-step{self.global_step}.pt")))

    def _eval_step(self, batch, split: str) -> None:
        if self.objective == "causal_lm" and "references" in batch:
            self._summaries[split] += [
                {"id": i, "prediction": text, "references": list(refs)}
                for i, text, refs in zip(
                    batch["ids"], self.summarize(batch), batch["references"], strict=True
                )
            ]
            return
        logits, labels = self(batch), self.labels(batch)
        if self.objective == "causal_lm":
            loss, tokens = next_token_loss(logits, labels)
            self.perplexity.update(split, loss, tokens)
            self._loss_batches[split] += 1
            self.log(f"{split}/loss", loss, on_epoch=True, on_step=False, sync_dist=True)
            return
        predictions = logits.squeeze(-1) if self.num_labels == 1 else logits.argmax(-1)
        self._outputs[split].append((predictions.detach().cpu(), labels.cpu()))
        self.log(f"{split}/loss", self.task_loss(logits, labels), on_epoch=True, on_step=False)

    @torch.no_grad()
    def summarize(self, batch: dict[str, Any]) -> list[str]:
        """Greedy summaries of a batch of left-padded prompts, each cut at EOS or ``max_new_tokens`` tokens.

        ``generate`` runs with the model's own cache: transformers' key cache for softmax layers, the
        fixed-size state (``LinearAttentionCache``, chosen by the converted model) for linear ones.
        """
        datamodule = self.trainer.datamodule
        tokenizer, prompts = datamodule.tokenizer, batch["input_ids"]
        out = self.model.generate(
            input_ids=prompts,
            attention_mask=batch["attention_mask"],
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=datamodule.pad_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(out[:, prompts.shape[1] :].tolist(), skip_special_tokens=True)
        return [text.strip() for text in texts]

    def _gathered_summaries(self, split: str) -> list[dict[str, Any]]:
        """Every rank's summaries of a split, once per example (a distributed sampler repeats some), by id."""
        summaries, self._summaries[split] = self._summaries[split], []
        if self.trainer.world_size > 1:
            every = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(every, summaries)
            summaries = [s for rank in every for s in rank]
        return list({s["id"]: s for s in summaries}.values())

    def _eval_epoch_end(self, split: str) -> None:
        self.log(f"{split}/distill_steps", float(self.distill_steps))
        if self.objective == "causal_lm":
            if self._loss_batches[split]:
                self._loss_batches[split] = 0
                self.log(f"{split}/ppl", self.perplexity.compute(split), prog_bar=True, sync_dist=True)
            summaries = self._gathered_summaries(split)
            if summaries:
                scores = rouge([s["prediction"] for s in summaries], [s["references"] for s in summaries])
                for name, value in scores.items():
                    self.log(f"{split}/{name}", value, prog_bar=name == "rouge1")
                words = sum(len(s["prediction"].split()) for s in summaries) / len(summaries)
                self.log(f"{split}/summary_words", words)
                if split == "test":
                    self.predictions = summaries
            return
        predictions, labels = (torch.cat(x) for x in zip(*self._outputs[split], strict=True))
        self._outputs[split].clear()
        metrics = task_metrics(self.metric_names, predictions, labels, self.num_labels)
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value)
        self.log(f"{split}/score", sum(metrics.values()) / len(metrics), prog_bar=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_start(self) -> None:
        if self.converted:  # evaluate the converted attention, also after stage 1 alone
            set_stage(self.model, "finetune")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def on_fit_end(self) -> None:
        if self.trainer.fast_dev_run or not (
            self.save_weights or self.save_feature_maps or self.save_converted
        ):
            return  # a smoke test hands nothing on
        state = full_state_dict(self.model)  # every rank takes part when the model is sharded
        if not self.trainer.is_global_zero:
            return
        if self.save_weights:
            _save({k: v for k, v in state.items() if f".{CHILD}." not in k}, self.save_weights)
        if self.save_feature_maps:
            _save(feature_map_state_dict(self.model, state), self.save_feature_maps)
        if self.save_converted:
            save_converted(
                self.model,
                self.save_converted,
                self.converted_from["base_model"],
                self.converted_from["attention"],
            )

    def configure_optimizers(self):
        # every parameter: the finetune stage trains them all (set_stage unfreezes them when it starts)
        finetune = self.optimizer(param_groups(self.model.parameters(), self.weight_decay))
        # each schedule steps only in its own stage, so it counts from that stage's first step
        optimizers = [finetune]
        schedulers = [warmup_cosine(finetune, self.finetune_steps, self.warmup_steps)]
        if self.distill_steps:
            distill = self.distill_optimizer(list(feature_map_parameters(self.model).values()))
            optimizers.insert(0, distill)
            schedulers.insert(0, warmup_cosine(distill, self.distill_steps))
        return optimizers, schedulers

    def _stage_optimizer(self, stage: str):
        """The optimizer and schedule of a stage (stage 1's exists only when it runs)."""
        optimizers, schedulers = self.optimizers(), self.lr_schedulers()
        if not isinstance(optimizers, list):
            optimizers, schedulers = [optimizers], [schedulers]
        index = 0 if stage == "distill" else len(optimizers) - 1
        return optimizers[index], schedulers[index]


def _check_vocab(model: nn.Module, datamodule) -> None:
    """An own classifier's embedding table (``model.vocab_size``) must cover the data's token ids."""
    needed, has = getattr(datamodule, "vocab_size", None), getattr(model, "vocab_size", None)
    if needed is not None and has is not None and has < needed:
        raise ValueError(
            f"the data's token ids run to {needed - 1} but the model embeds {has} ids; set model.vocab_size "
            f"to at least {needed}"
        )


def _save(state: dict[str, Tensor], path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
