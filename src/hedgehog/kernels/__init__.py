"""Triton kernels for linear attention, chosen by the attention library for CUDA tensors.

Imports nothing of ours: inputs are plain tensors, states are (kv, k_sum) pairs.
"""

from hedgehog.kernels.ops import (
    hedgehog_attention,
    hedgehog_decode,
    linear_attention,
    linear_attention_decode,
    supported,
)

__all__ = [
    "hedgehog_attention",
    "hedgehog_decode",
    "linear_attention",
    "linear_attention_decode",
    "supported",
]
