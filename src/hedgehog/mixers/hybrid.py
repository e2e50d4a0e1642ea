"""Hybrid H3 (Fu, Dao et al., ICLR 2023): H3 layers with two softmax attention layers among them.

The H3 paper's hybrid keeps 2 attention layers; its code (safari, the 125M H3 configs for WikiText-103
and the Pile: ``attn_layer_idx: [1, 8]`` of 12 layers) puts them in the second layer and the layer two
thirds of the way up. ``hybrid_h3`` is the constructor a model calls once per layer (through
``hedgehog.attention.build_attention``, which hands it ``layer_index`` and ``num_layers``): softmax
attention in the listed layers, H3 in the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from hedgehog.attention import SoftmaxAttention
from hedgehog.mixers.h3 import H3


def hybrid_attention_layers(num_layers: int) -> tuple[int, ...]:
    """The softmax layers of Hybrid H3 at this depth: 1 and round(2 N / 3) (0-indexed).

    [1, 8] of 12 layers, as the H3 code's 125M configs; [1, 4] of 6 and [1, 3] of 4. With 2 layers
    the two coincide and one softmax layer remains.
    """
    if num_layers < 2:
        raise ValueError(
            f"Hybrid H3 puts softmax attention in the second layer, but the model has {num_layers} layer; "
            "use attention=h3 for a one-layer model"
        )
    return tuple(sorted({1, round(2 * num_layers / 3)}))


def hybrid_h3(
    num_heads: int,
    head_dim: int,
    layer_index: int,
    num_layers: int,
    causal: bool = True,
    attention_layers: Sequence[int] | None = None,
    check_finite: bool = True,
    **h3: Any,
) -> nn.Module:
    """Layer ``layer_index`` of ``num_layers`` of Hybrid H3: ``SoftmaxAttention`` in ``attention_layers``
    (None: ``hybrid_attention_layers(num_layers)``), else ``H3(**h3)`` (state_size, shift_size, ...)."""
    layers = hybrid_attention_layers(num_layers) if attention_layers is None else tuple(attention_layers)
    outside = [i for i in layers if not 0 <= i < num_layers]
    if outside:
        raise ValueError(
            f"attention_layers {list(layers)} must index the model's {num_layers} layers (0-indexed); "
            f"{outside} are outside, so the model would hold fewer softmax layers than listed: fix the list "
            "or set it to null for the H3 placement at this depth"
        )
    if not 0 <= layer_index < num_layers:
        raise ValueError(f"layer_index must be in 0..{num_layers - 1}, got {layer_index}")
    if layer_index in layers:
        return SoftmaxAttention(
            num_heads=num_heads, head_dim=head_dim, causal=causal, check_finite=check_finite
        )
    return H3(num_heads=num_heads, head_dim=head_dim, causal=causal, check_finite=check_finite, **h3)
