"""Sub-quadratic sequence mixers the paper compares against (H3, Hyena), with the attention interface.

Each is built as ``mixer(num_heads=, head_dim=, causal=)`` (a Hydra partial from conf/attention/)
and called ``forward(q, k, v, cache=None, key_padding_mask=None) -> (out, state)`` on the q, k, v
the model's own projections produce, so it replaces an attention in ``TransformerLM`` or a
converted Hugging Face model with no change to either; the state has ``.offset`` (tokens seen).
``hybrid_h3`` builds Hybrid H3 layer by layer: softmax attention in two layers, H3 in the others.
"""

from hedgehog.mixers.fftconv import causal_conv, fft_length, fftconv
from hedgehog.mixers.h3 import H3, H3State
from hedgehog.mixers.hybrid import hybrid_attention_layers, hybrid_h3
from hedgehog.mixers.hyena import Hyena, HyenaFilter, HyenaState

__all__ = [
    "H3",
    "H3State",
    "Hyena",
    "HyenaFilter",
    "HyenaState",
    "causal_conv",
    "fft_length",
    "fftconv",
    "hybrid_attention_layers",
    "hybrid_h3",
]
