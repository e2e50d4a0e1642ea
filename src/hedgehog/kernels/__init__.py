"""Triton kernels for linear attention, chosen by the attention library for CUDA tensors.

Imports nothing of ours: inputs are plain tensors, states are (kv, k_sum) pairs. Launch options
are tuned per shape (``ops.TUNED``); ``launch_overrides`` changes them inside a ``with`` block.
"""

from hedgehog.kernels.ops import (
    KERNELS,
    hedgehog_attention,
    hedgehog_decode,
    hedgehog_features,
    launch_overrides,
    linear_attention,
    linear_attention_decode,
    supported,
    window_attention,
)

__all__ = [
    "KERNELS",
    "hedgehog_attention",
    "hedgehog_decode",
    "hedgehog_features",
    "launch_overrides",
    "linear_attention",
    "linear_attention_decode",
    "supported",
    "window_attention",
]
