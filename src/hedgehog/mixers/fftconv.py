"""Causal convolutions and the channel layout that the sub-quadratic mixers (H3, Hyena) share.

A causal convolution of a signal u (..., T) with a filter k (..., L), L >= T, plus a skip term D:

    y_t = sum_{s<=t} k_{t-s} u_s + D u_t

Long filters (the diagonal SSM's kernel in H3, Hyena's implicit filter) run through the FFT:
y = irfft(rfft(u, n) * rfft(k[:T], n))[:T] with zero padding to n >= 2T, so the circular
convolution the FFT computes never wraps around; any T works (n is the next 2^a 3^b 5^c, a size
FFT libraries handle fast). Short filters (H3's shift SSM, Hyena's size-3 convolutions) run
directly as depthwise convolutions and carry their last inputs between calls.

The mixers take q, k, v laid out (batch, heads, tokens, head_dim) like every attention; the
convolutions run over channels c = head * head_dim + d laid out (batch, channels, tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hedgehog.attention import check_qkv
from hedgehog.attention.linear_attention import upcast


def fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: an FFT size without large prime factors."""
    best = 1 << max(n - 1, 0).bit_length()
    five = 1
    while five < best:
        three = five
        while three < best:
            size = three
            while size < n:
                size *= 2
            best = min(best, size)
            three *= 3
        five *= 5
    return best


def fftconv(u: Tensor, k: Tensor, d: Tensor | None = None) -> Tensor:
    """Causal convolution y_t = sum_{s<=t} k_{t-s} u_s + d u_t of u (..., T) with k (..., L >= T).

    k and d broadcast against u's leading dims (a (C, L) filter and (C,) skip for u (B, C, T)).
    Computed, and returned, in float32 (float64 stays float64), also under half-precision
    autocast: a long sum of half-precision products loses the early tokens.
    """
    t = u.shape[-1]
    if k.shape[-1] < t:
        raise ValueError(
            f"the filter has {k.shape[-1]} taps but the signal {t} tokens; a causal convolution needs a "
            "filter at least as long as the signal (raise the filter's max_len)"
        )
    dtype = torch.promote_types(upcast(u).dtype, upcast(k).dtype)
    with torch.autocast(u.device.type, enabled=False):
        u = u.to(dtype)
        n = fft_length(2 * t)
        spectrum = torch.fft.rfft(u, n=n) * torch.fft.rfft(k[..., :t].to(dtype), n=n)
        y = torch.fft.irfft(spectrum, n=n)[..., :t]
        if d is not None:
            y = y + d.to(dtype)[..., None] * u
    return y


def causal_conv(
    x: Tensor, weight: Tensor, past: Tensor | None = None, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Depthwise causal convolution y_t = sum_j weight[c, j] x_{t-j} (+ bias[c]) of x (B, C, T).

    ``weight`` (C, W) holds tap j for lag j. ``past`` (B, C, W - 1) holds the last inputs of an
    earlier call (zeros, the sequence start, when None); returns y and the past for the next call.
    """
    width = weight.shape[-1]
    if past is None:
        past = x.new_zeros(*x.shape[:-1], width - 1)
    full = torch.cat([past.to(x.dtype), x], dim=-1)
    # conv1d correlates: the flipped taps put tap j on input t - j
    y = F.conv1d(full, weight.flip(-1)[:, None, :].to(x.dtype), bias, groups=x.shape[-2])
    return y, full[..., full.shape[-1] - (width - 1) :]


def to_channels(x: Tensor) -> Tensor:
    """(B, H, T, D) -> (B, H * D, T), channel c = h * D + d, upcast to float32 (float64 kept)."""
    b, h, t, d = x.shape
    return upcast(x).transpose(2, 3).reshape(b, h * d, t)


def from_channels(y: Tensor, num_heads: int) -> Tensor:
    """(B, H * D, T) -> (B, H, T, D): the inverse of ``to_channels``."""
    b, c, t = y.shape
    return y.view(b, num_heads, c // num_heads, t).transpose(2, 3)


def check_mixer_inputs(
    name: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    num_heads: int,
    head_dim: int,
    key_padding_mask: Tensor | None,
    check_finite: bool,
) -> None:
    """Raise a clear error unless q, k, v are (B, num_heads, T, head_dim) alike and the mask (B, T)."""
    check_qkv(q, k, v, check_finite)
    if q.shape != k.shape or k.shape != v.shape or q.shape[1] != num_heads or q.shape[-1] != head_dim:
        raise ValueError(
            f"{name} mixes q, k, v of one shape (batch, {num_heads}, tokens, {head_dim}) (the heads and "
            f"head_dim it was built with; no key cache, its state carries the past); got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (q.shape[0], q.shape[2]):
        raise ValueError(
            f"{name} takes key_padding_mask as (batch, tokens) = {(q.shape[0], q.shape[2])} for this call's "
            f"tokens (True = real), got shape {tuple(key_padding_mask.shape)}"
        )


def causal_only(name: str, causal: bool) -> None:
    """Raise for causal=False: the mixers run forward in time, as in their papers."""
    if not causal:
        raise ValueError(
            f"{name} is a causal sequence mixer (as in its paper) but was built with causal=False, as for an "
            "encoder (BERT, ViT); use it in causal models (TransformerLM, GPT-2 or Llama conversions) and "
            "pick softmax or a linear attention for encoders"
        )
