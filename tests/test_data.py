"""The associative-recall generator: deterministic, well formed, clear errors."""

import hashlib
import importlib

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


@pytest.mark.parametrize("query_power_a", [1.0, 0.01])
def test_every_query_asks_for_a_value_given_in_context(query_power_a):
    vocab, pairs = 64, 6
    inputs, labels = associative_recall(50, vocab, pairs, 40, seed=0, query_power_a=query_power_a)
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
    with pytest.raises(ValueError, match="query_power_a"):
        associative_recall(1, 64, 4, 32, seed=0, query_power_a=0.0)


def test_power_law_query_slots_follow_sequential_weighted_draws():
    """query_power_a < 1 (zoology's power law): each row's slots are drawn one by one with weight s^(a-1)
    among those left, so how often each slot holds a query matches torch.multinomial's sequential draws
    without replacement; a = 1 keeps the uniform generator's sequences."""
    pairs, length, a, rows = 4, 40, 0.01, 20_000
    _, labels = associative_recall(rows, 64, pairs, length, seed=1, query_power_a=a)
    slots = (length - 2 * pairs) // 2
    ours = torch.bincount(((labels != IGNORE_INDEX).nonzero()[:, 1] - 2 * pairs) // 2, minlength=slots)
    weights = torch.arange(1, slots + 1, dtype=torch.float64) ** (a - 1)
    g = torch.Generator().manual_seed(0)
    drawn = torch.stack([torch.multinomial(weights, pairs, generator=g) for _ in range(rows)])
    theirs = torch.bincount(drawn.flatten(), minlength=slots)
    assert ours[0] > 5 * ours[-1]  # the first slot after the pairs is the likeliest
    # inclusion frequencies agree within sampling noise (binomial std at most sqrt(rows / 4) ~ 71)
    assert (ours - theirs).abs().max() < 300, (ours.tolist(), theirs.tolist())
    # the uniform default draws the sequences the published records were trained on (digest before the option)
    x, y = associative_recall(500, 8192, 4, 64, seed=3)
    digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:16]
    assert digest == "876ff6f781d20d40"


def test_datamodule_splits_differ():
    dm = AssociativeRecallDataModule(
        num_train=16, num_val=16, num_test=16, batch_size=4, seq_len=32, num_pairs=4
    )
    dm.setup()
    assert not torch.equal(dm.splits["train"].tensors[0], dm.splits["val"].tensors[0])
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (4, 32)


def test_sampling_in_blocks_draws_what_one_draw_would(monkeypatch):
    """Keys and values come from blocks of rows (bounded memory at a vocabulary of thousands): the same
    sequences as one draw of every row, the k smallest of each row's uniform draws."""
    module = importlib.import_module("hedgehog.data.associative_recall")  # the module, not its function
    whole = associative_recall(40, 64, 4, 32, seed=5)
    monkeypatch.setattr(module, "_BLOCK_ELEMENTS", 7 * 31)  # 7 rows of 31 keys a block
    blocks = associative_recall(40, 64, 4, 32, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(whole, blocks, strict=True))
    g = torch.Generator().manual_seed(0)
    draws = torch.rand(5, 31, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(module._sample_distinct(5, 31, 4, g), draws.argsort(-1)[:, :4])


def test_a_zoology_sized_vocabulary_is_quick_and_well_formed():
    """MQAR at vocabulary 8,192 (4,095 keys): distinct keys and values, every query answerable."""
    inputs, labels = associative_recall(2000, 8192, 16, 256, seed=0)
    keys, values = inputs[:, 0:32:2], inputs[:, 1:32:2]
    assert (keys.sort(-1).values.diff(dim=-1) > 0).all() and (values.sort(-1).values.diff(dim=-1) > 0).all()
    assert keys.max() <= 4095 and values.min() > 4095
    scored = labels != IGNORE_INDEX
    assert (scored.sum(-1) == 16).all()
    answer = torch.zeros(2000, 8192, dtype=torch.long).scatter_(1, keys, values)
    assert torch.equal(answer.gather(1, inputs)[scored], labels[scored])
