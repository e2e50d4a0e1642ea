"""Multi-query associative recall (MQAR), generated: no download, deterministic by seed.

A sequence first lists ``num_pairs`` key-value pairs ``k1 v1 k2 v2 ...``, then asks for keys
again at random later positions; after each query key the model must predict its value
(answers never appear in the input, so no query can be solved by elimination).
Keys and values come from disjoint halves of the vocabulary (token 0 is padding), keys
and values are distinct within a sequence, and only query positions carry a label
(others are -100). Accuracy is over query positions.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from hedgehog.data.loading import IGNORE_INDEX, ResumableLoader

PAD = 0
# random numbers drawn per block of rows when sampling keys and values (bounds memory at large vocabularies)
_BLOCK_ELEMENTS = 1 << 24


def _sample_distinct(num_rows: int, population: int, k: int, generator: torch.Generator) -> Tensor:
    """(num_rows, k) indices into range(population), distinct within a row, in random order.

    The k smallest of ``population`` uniform draws per row: a uniformly random ordered k-subset.
    Rows are drawn in blocks, which gives the same numbers as one draw while bounding memory at
    a vocabulary of thousands; topk keeps it fast (a full sort of 100k x 4k draws takes minutes).
    """
    rows = max(1, _BLOCK_ELEMENTS // population)
    return torch.cat(
        [
            torch.rand(min(rows, num_rows - start), population, generator=generator)
            .topk(k, dim=-1, largest=False)
            .indices
            for start in range(0, num_rows, rows)
        ]
    )


def _sample_weighted(num_rows: int, weights: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """(num_rows, k) indices into range(len(weights)), distinct within a row, each row drawn one by one in
    proportion to ``weights`` among those not yet drawn (Efraimidis-Spirakis: the k smallest -log(u) / w)."""
    draws = -torch.log(torch.rand(num_rows, len(weights), generator=generator)) / weights
    return draws.topk(k, dim=-1, largest=False).indices


def associative_recall(
    num_samples: int, vocab_size: int, num_pairs: int, seq_len: int, seed: int, query_power_a: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Return (inputs, labels), each (num_samples, seq_len) int64.

    ``query_power_a``: the query slots' distribution. 1.0: uniform over the slots after the pairs (this
    generator's default; the same sequences as before the option existed). Below 1: slot s (1-based, from
    the end of the pairs) drawn with weight s^(a - 1), zoology's power law (its MQAR protocol uses
    a = 0.01), which puts most queries in the first slots after the pairs.
    """
    if not 0 < query_power_a <= 1:
        raise ValueError(
            f"query_power_a={query_power_a} must be in (0, 1]: 1 draws query slots uniformly, smaller values "
            "favour the slots right after the pairs (zoology's MQAR uses 0.01)"
        )
    num_keys = (vocab_size - 1) // 2
    num_values = vocab_size - 1 - num_keys
    if num_pairs > min(num_keys, num_values):
        raise ValueError(
            f"num_pairs={num_pairs} needs at least {num_pairs} distinct keys and values, but "
            f"vocab_size={vocab_size} gives {num_keys} keys; raise vocab_size or lower num_pairs"
        )
    if seq_len < 4 * num_pairs:
        raise ValueError(
            f"seq_len={seq_len} cannot hold {num_pairs} pairs and a query for each "
            f"(needs >= 4 * num_pairs = {4 * num_pairs}); raise seq_len or lower num_pairs"
        )
    g = torch.Generator().manual_seed(seed)
    n, p = num_samples, num_pairs
    keys = _sample_distinct(n, num_keys, p, g) + 1
    values = _sample_distinct(n, num_values, p, g) + 1 + num_keys
    inputs = torch.full((n, seq_len), PAD, dtype=torch.long)
    labels = torch.full((n, seq_len), IGNORE_INDEX, dtype=torch.long)
    inputs[:, 0 : 2 * p : 2], inputs[:, 1 : 2 * p : 2] = keys, values

    # Each key is queried once, in a random order, at a random slot of two tokens (the
    # query key, then padding). Answers are never shown in the input: were each answer
    # written after its query, the last query's value would be the one not yet repeated,
    # and elimination alone would score about 52% with 4 pairs, without any recall.
    slots = (seq_len - 2 * p) // 2
    if query_power_a == 1.0:
        slot_of_query = _sample_distinct(n, slots, p, g)
    else:
        weights = torch.arange(1, slots + 1, dtype=torch.float64) ** (query_power_a - 1)
        slot_of_query = _sample_weighted(n, weights, p, g)
    position = 2 * p + 2 * slot_of_query
    order = torch.rand(n, p, generator=g).argsort(-1)
    inputs.scatter_(1, position, keys.gather(1, order))
    labels.scatter_(1, position, values.gather(1, order))
    return inputs, labels


class AssociativeRecallDataModule(pl.LightningDataModule):
    """Train/val/test splits drawn from disjoint seeds."""

    def __init__(
        self,
        vocab_size: int = 64,
        num_pairs: int = 8,
        seq_len: int = 64,
        num_train: int = 20_000,
        num_val: int = 1_000,
        num_test: int = 1_000,
        batch_size: int = 64,
        seed: int = 0,
        query_power_a: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        sizes = {"train": hp.num_train, "val": hp.num_val, "test": hp.num_test}
        for offset, (split, size) in enumerate(sizes.items()):
            if split not in self.splits:
                inputs, labels = associative_recall(
                    size,
                    hp.vocab_size,
                    hp.num_pairs,
                    hp.seq_len,
                    seed=hp.seed * 1000 + offset,
                    query_power_a=hp.query_power_a,
                )
                self.splits[split] = TensorDataset(inputs, labels)

    def train_dataloader(self) -> ResumableLoader:
        return ResumableLoader.for_trainer(
            self.splits["train"], self.hparams.batch_size, self.hparams.seed, self.trainer
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=self.hparams.batch_size)
