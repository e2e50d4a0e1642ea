"""Hyena (order 2; Poli et al., ICML 2023, arXiv:2302.10866) as a sequence mixer.

It consumes the q, k, v the model's own projections produce (the paper's x1, x2, v) and computes,
per channel c of the heads * head_dim channels,

    q~, k~, v~ = short causal depthwise convolutions (size 3) of q, k, v     (the paper's "Projection")
    z_t = k~_t v~_t                                                         gate before the long convolution
    y_t = q~_t ((h * z)_t + D z_t)                                          long convolution, then gate

that is y = D_q T_h D_k v, the order-2 form of the authors' public code (safari, HyenaOperator with
order=2, which produced the paper's language-model results) and of their blog post; the paper's
recursion z^(n+1) = x^n (h^n * z^n) from z^1 = v has a long convolution before the first gate too
(two filters at order 2), which the code does not.

The long filter is implicit (the paper's Hyena filters): h_t = window(t) * FFN(PositionalEncoding(t)) per channel,
for t = 0..max_len-1 with t normalised to [0, 1] by max_len - 1:

- PositionalEncoding(t) = [t, cos(2 pi f_k t'), sin(2 pi f_k t')], t' = t_index / max_len,
  K = (emb_dim - 1) / 2 bands f_k spread over [~0, K - 1] (a tiny f_0, so no feature is constant 0);
- FFN: Linear -> sin(w x) -> (Linear -> sin(w x)) x depth -> Linear (no bias) to the channels,
  w learned per hidden unit (one w per mixer, shared by its sine activations);
- window(t) = exp(-alpha_c t): a fixed exponential decay, alpha_c spread across channels from
  ln(1/target)/slow_decay to ln(1/target)/fast_decay (so the filter decays to `target` at those
  fractions of max_len).

So the filter depends on max_len: the config passes the model's (``max_len: ${model.max_len}``;
for converted Hugging Face models the model config's max_len, e.g. sequence_classifier's), and
sequences longer than max_len raise.

Decoding: Hyena has no O(1) recurrence. The state keeps the short convolutions' last inputs, every
long-convolution input so far and the filter (computed once at prefill), so a new token costs O(T)
(one dot product with the filter per channel) and prefill + decoding equals the full forward.
Returned states are detached (no backpropagation across calls).

Padding (key_padding_mask, True = real): q, k, v and the long convolution's input are zeroed at
padded positions, so a pad feeds nothing forward. A pad is still a time step: left padding (before
any real token) and right padding (after the last) give the real positions the outputs of the
unpadded sequence (the convolutions are shift-invariant), provided pads plus tokens fit max_len;
a pad between real tokens would shift the lags of everything before it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from hedgehog.mixers.fftconv import (
    causal_conv,
    causal_only,
    check_mixer_inputs,
    fftconv,
    from_channels,
    to_channels,
)


class HyenaState(NamedTuple):
    """Hyena after ``offset`` tokens: what the next tokens' convolutions read.

    past: the last short_size - 1 inputs of the short convolutions (B, 3 C, short_size - 1);
    inputs: every long-convolution input z so far (B, C, offset), which grows like a key cache;
    filter: the implicit long filter h (C, max_len), computed once at prefill.
    """

    past: Tensor
    inputs: Tensor
    filter: Tensor

    # fields without a batch dimension, the same for every row (a cache that selects rows keeps them)
    shared_fields = ("filter",)

    @property
    def offset(self) -> int:
        return self.inputs.shape[-1]


class HyenaFilter(nn.Module):
    """Hyena's implicit long filter h (channels, length): window(t) * FFN(PositionalEncoding(t))."""

    def __init__(
        self,
        channels: int,
        max_len: int,
        emb_dim: int = 33,
        width: int = 64,
        depth: int = 2,
        frequency: float = 14.0,
        fast_decay: float = 0.3,
        slow_decay: float = 1.5,
        target: float = 1e-2,
    ) -> None:
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(
                f"emb_dim={emb_dim} must be odd and >= 3: the time t plus a cosine and a sine per band"
            )
        if max_len < 1:
            raise ValueError(f"max_len={max_len} must be at least 1 (the longest sequence the filter covers)")
        if not (0 < fast_decay <= slow_decay and 0 < target < 1):
            raise ValueError(
                "need 0 < fast_decay <= slow_decay and 0 < target < 1, got "
                f"fast_decay={fast_decay}, slow_decay={slow_decay}, target={target}"
            )
        self.max_len = max_len
        bands = (emb_dim - 1) // 2
        index = torch.arange(max_len, dtype=torch.float32)
        t = index / max(max_len - 1, 1)
        phase = 2 * math.pi * index[:, None] * torch.linspace(1e-4, bands - 1, bands) / max_len
        self.register_buffer("t", t, persistent=False)
        self.register_buffer(
            "encoding", torch.cat([t[:, None], torch.cos(phase), torch.sin(phase)], dim=-1), persistent=False
        )
        decay = torch.linspace(math.log(1 / target) / slow_decay, math.log(1 / target) / fast_decay, channels)
        self.register_buffer("decay", decay, persistent=False)
        self.hidden = nn.ModuleList(
            [nn.Linear(emb_dim, width)] + [nn.Linear(width, width) for _ in range(depth)]
        )
        self.frequency = nn.Parameter(torch.full((width,), frequency))
        self.out = nn.Linear(width, channels, bias=False)

    def forward(self, length: int) -> Tensor:
        """The first ``length`` taps h_0..h_(length-1) of every channel, (channels, length)."""
        x = self.encoding[:length]
        for layer in self.hidden:
            x = torch.sin(self.frequency * layer(x))  # FFN with sine activations
        window = torch.exp(-self.t[:length, None] * self.decay)  # window(t) = exp(-alpha_c t)
        return (self.out(x) * window).T


class Hyena(nn.Module):
    """Order-2 Hyena over (batch, heads, tokens, head_dim) q, k, v, built as
    ``Hyena(num_heads=, head_dim=, causal=, max_len=)``.

    max_len: the longest sequence (the filter's length); short_size: the short convolutions' taps;
    filter_*: the implicit filter (HyenaFilter: positional-encoding size, FFN width and depth, sine
    frequency). Defaults follow the public Hyena language-model configs.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_len: int,
        causal: bool = True,
        short_size: int = 3,
        filter_emb_dim: int = 33,
        filter_width: int = 64,
        filter_depth: int = 2,
        filter_frequency: float = 14.0,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        causal_only("Hyena", causal)
        if short_size < 1:
            raise ValueError(f"short_size={short_size} must be at least 1")
        self.num_heads, self.head_dim, self.causal, self.max_len = num_heads, head_dim, causal, max_len
        self.check_finite = check_finite
        self.channels = channels = num_heads * head_dim
        # the short depthwise convolutions of q, k, v (Conv1d init: uniform within 1/sqrt(fan_in))
        bound = 1 / math.sqrt(short_size)
        self.short_weight = nn.Parameter(torch.empty(3 * channels, short_size).uniform_(-bound, bound))
        self.short_bias = nn.Parameter(torch.empty(3 * channels).uniform_(-bound, bound))
        self.filter = HyenaFilter(
            channels, max_len, filter_emb_dim, filter_width, filter_depth, filter_frequency
        )
        self.d = nn.Parameter(torch.randn(channels))  # the long convolution's skip term

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cache: HyenaState | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, HyenaState]:
        check_mixer_inputs(
            "Hyena", q, k, v, self.num_heads, self.head_dim, key_padding_mask, self.check_finite
        )
        t = q.shape[2]
        offset = 0 if cache is None else cache.offset
        if offset + t > self.max_len:
            raise ValueError(
                f"Hyena's long filter covers max_len={self.max_len} tokens but the sequence reaches "
                f"{offset + t}; raise max_len (the config passes max_len: ${{model.max_len}})"
            )
        out_dtype = v.dtype
        dtype = torch.promote_types(torch.promote_types(q.dtype, torch.float32), self.d.dtype)
        with torch.autocast(q.device.type, enabled=False):
            x = torch.cat([to_channels(q), to_channels(k), to_channels(v)], dim=1).to(dtype)  # (B, 3C, T)
            keep = None if key_padding_mask is None else key_padding_mask.to(dtype)[:, None, :]
            if keep is not None:
                x = x * keep
            past = None if cache is None else cache.past
            x, past = causal_conv(x, self.short_weight, past, self.short_bias)
            x1, x2, x_v = x.split(self.channels, dim=1)
            z = x2 * x_v  # gate with k~ before the long convolution
            if keep is not None:
                z = z * keep
            h = self.filter(self.max_len) if cache is None else cache.filter
            if cache is None:
                inputs = z
                y = fftconv(z, h, self.d)
            else:
                inputs = torch.cat([cache.inputs, z], dim=-1)
                if t == 1:  # one new token: y_T = sum_s h_(T-s) z_s + D z_T, a dot product (O(T))
                    taps = h[:, : inputs.shape[-1]].flip(-1)
                    y = (inputs * taps).sum(-1, keepdim=True) + self.d[:, None] * z
                else:
                    y = fftconv(inputs, h, self.d)[..., -t:]
            out = x1 * y  # gate with q~ after it
        out = from_channels(out, self.num_heads).to(out_dtype)
        return out, HyenaState(past.detach(), inputs.detach(), h.detach())
