"""What every task's optimizer shares: the weight-decay parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def param_groups(
    params: Iterable[nn.Parameter], weight_decay: float, no_decay: Iterable[nn.Parameter] = ()
) -> list[dict]:
    """AdamW groups: matrices (2 or more dims) decay; biases, norms, other vectors and ``no_decay`` do not.

    ``no_decay`` names matrices that decay would pull the wrong way, e.g. Hedgehog's feature-map W,
    which starts at the identity: decay pulls it towards zero, not back to its start.
    """
    params = list(params)
    exempt = {id(p) for p in no_decay}
    decays = [p.dim() >= 2 and id(p) not in exempt for p in params]
    return [
        {"params": [p for p, d in zip(params, decays, strict=True) if d], "weight_decay": weight_decay},
        {"params": [p for p, d in zip(params, decays, strict=True) if not d], "weight_decay": 0.0},
    ]


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to ``min_ratio`` of the peak learning rate.

    With ``warmup_steps`` about 30% of ``total_steps`` and ``min_ratio`` 0 this is a one-cycle schedule.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
