"""The associative-recall generator: deterministic, well formed, clear errors."""

import pytest
import torch

from hedgehog.data import AssociativeRecallDataModule, associative_recall
from hedgehog.data.loading import IGNORE_INDEX


def test_deterministic_by_seed():
    a = associative_recall(8, 64, 4, 32, seed=3)
    b = associative_recall(8, 64, 4, 32, seed=3)
    c = associative_recall(8, 64, 4, 32, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_every_query_asks_for_a_value_given_in_context():
    vocab, pairs = 64, 6
    inputs, labels = associative_recall(50, vocab, pairs, 40, seed=0)
    num_keys = (vocab - 1) // 2
    for x, y in zip(inputs, labels, strict=True):
        keys, values = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
        assert len(set(keys.tolist())) == pairs and len(set(values.tolist())) == pairs
        assert (keys >= 1).all() and (keys <= num_keys).all() and (values > num_keys).all()
        answer = dict(zip(keys.tolist(), values.tolist(), strict=True))
        query_positions = (y != IGNORE_INDEX).nonzero().flatten()
        assert len(query_positions) == pairs
        assert (query_positions >= 2 * pairs).all()
        for p in query_positions.tolist():
            assert y[p] == answer[x[p].item()]
        # no value is repeated after the context: queries cannot be answered by elimination
        assert (x[2 * pairs :] <= num_keys).all()


def test_bad_sizes_raise_clear_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        associative_recall(1, 16, 10, 64, seed=0)
    with pytest.raises(ValueError, match="seq_len"):
        associative_recall(1, 64, 8, 20, seed=0)


def test_datamodule_splits_differ():
    dm = AssociativeRecallDataModule(
        num_train=16, num_val=16, num_test=16, batch_size=4, seq_len=32, num_pairs=4
    )
    dm.setup()
    assert not torch.equal(dm.splits["train"].tensors[0], dm.splits["val"].tensors[0])
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (4, 32)
