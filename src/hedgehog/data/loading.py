"""A training loader that resumes mid-epoch from the trainer's step: no batch repeated or skipped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

# the label of a position that carries no loss (torch's cross_entropy ignore_index)
IGNORE_INDEX = -100


class ResumableLoader:
    """Shuffled batches in an order fixed by (seed, epoch), sharded across ranks.

    Each pass starts at the batch given by ``batches_done()`` (the trainer's count of
    batches already trained), so a run resumed from a checkpoint continues with the next
    batch of the same order. The dataset must take a tensor of indices and return a batch
    (as ``TensorDataset`` does).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        batches_done: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.batches_done, self.rank, self.world_size = batches_done, rank, world_size

    @classmethod
    def for_trainer(
        cls, dataset: Dataset, batch_size: int, seed: int, trainer: Any = None
    ) -> ResumableLoader:
        """A training loader that resumes from ``trainer``'s step and is sharded over its ranks (if given)."""
        loader = cls(dataset, batch_size, seed)
        if trainer is not None:
            loader.batches_done = lambda: trainer.global_step * trainer.accumulate_grad_batches
            loader.rank, loader.world_size = trainer.global_rank, trainer.world_size
        return loader

    def __len__(self) -> int:
        return len(self.dataset) // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[Any]:
        if len(self) == 0:
            raise ValueError(
                f"{len(self.dataset)} examples cannot fill one batch of {self.batch_size} on "
                f"{self.world_size} device(s); lower the batch size or add data"
            )
        epoch, start = divmod(self.batches_done(), len(self))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.dataset), generator=generator)[self.rank :: self.world_size]
        for i in range(start, len(self)):
            yield self.dataset[order[i * self.batch_size : (i + 1) * self.batch_size]]
