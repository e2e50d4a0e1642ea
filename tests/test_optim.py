"""The optimizer pieces every task shares: weight-decay groups and the warm-up cosine schedule."""

from functools import partial
from types import SimpleNamespace

import pytest
import torch

from hedgehog.attention import HedgehogFeatureMap, LinearAttention
from hedgehog.models import TransformerLM
from hedgehog.tasks import LanguageModelingTask
from hedgehog.tasks.optim import param_groups, warmup_cosine


def hedgehog_lm() -> TransformerLM:
    attention = partial(LinearAttention, feature_map=HedgehogFeatureMap)
    return TransformerLM(vocab_size=20, d_model=16, num_layers=1, num_heads=2, max_len=8, attention=attention)


def decayed(groups: list[dict]) -> set[int]:
    return {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}


def test_param_groups_decay_matrices_except_the_ones_named():
    lm = hedgehog_lm()
    feature_map = lm.blocks[0].attn.feature_map
    groups = param_groups(lm.parameters(), 0.1, no_decay=feature_map.parameters())
    assert id(lm.blocks[0].qkv.weight) in decayed(groups) and id(lm.embed.weight) in decayed(groups)
    assert id(lm.blocks[0].qkv.bias) not in decayed(groups)
    assert id(feature_map.weight_q) not in decayed(groups) and id(feature_map.weight_k) not in decayed(groups)
    assert id(feature_map.weight_q) in decayed(param_groups(lm.parameters(), 0.1))
    assert sum(len(g["params"]) for g in groups) == len(list(lm.parameters()))


@pytest.mark.parametrize("decay_feature_maps", [False, True])
def test_language_modeling_task_spares_the_feature_maps_unless_told(decay_feature_maps):
    """Weight decay pulls Hedgehog's W towards zero, not its identity start: by default it is not decayed."""
    lm = hedgehog_lm()
    task = LanguageModelingTask(
        lm, partial(torch.optim.AdamW, lr=1e-3), weight_decay=0.1, decay_feature_maps=decay_feature_maps
    )
    task.trainer = SimpleNamespace(estimated_stepping_batches=100)
    optimizer = task.configure_optimizers()["optimizer"]
    assert (
        id(lm.blocks[0].attn.feature_map.weight_q) in decayed(optimizer.param_groups)
    ) is decay_feature_maps


def test_warmup_as_a_fraction_of_the_run_gives_a_one_cycle_schedule():
    task = LanguageModelingTask(
        hedgehog_lm(), partial(torch.optim.AdamW, lr=1.0), warmup_steps=0.3, min_lr_ratio=0.0
    )
    task.trainer = SimpleNamespace(estimated_stepping_batches=100)
    scheduler = task.configure_optimizers()["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(100):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1 / 30) and rates[29] == pytest.approx(1.0)
    assert rates.index(max(rates)) == 29 and rates[-1] < 1e-3


def test_warmup_cosine_decays_to_its_floor():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = warmup_cosine(optimizer, total_steps=20, warmup_steps=4, min_ratio=0.1)
    for _ in range(20):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.2)


def test_a_warmup_that_is_neither_a_count_nor_a_fraction_is_refused():
    with pytest.raises(ValueError, match="fraction"):
        LanguageModelingTask(hedgehog_lm(), partial(torch.optim.AdamW), warmup_steps=2.5)
