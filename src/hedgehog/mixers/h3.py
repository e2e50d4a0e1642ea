"""H3 (Hungry Hungry Hippos; Fu, Dao et al., ICLR 2023, arXiv:2212.14052) as a sequence mixer.

It consumes the q, k, v the model's own projections produce (Alg. 1, line 1 is the model's job)
and computes, per head h of d_h channels (Alg. 1, lines 2-7):

    K_bar = SSM_shift(K)                                  a shift SSM over the last m keys
    KV_t  = SSM_diag(K_bar^(h) (V^(h))^T)_t               d_h x d_h per token, one diagonal SSM per head
    O_t   = (Q_t^(h))^T KV_t                              back to d_h channels

Shift SSM (Sec. 3): A is the m x m shift matrix, B = e_1, so the state x_t = (k_t, ..., k_{t-m+1})
and y_t = C x_t + D k_t is a causal convolution with m learned taps (C) plus the skip D: run here
as a depthwise convolution, its state the last m - 1 keys.

Diagonal SSM (S4D, Gu et al. 2022): per head, N/2 complex modes in conjugate pairs,
A = -exp(log_a_real) + i a_imag (S4D-Lin init: -1/2 + i pi n), zero-order hold with step
dt = exp(log_dt): A_bar = exp(dt A), B_bar = (exp(dt A) - 1) / A * B, and

    x_t = A_bar x_{t-1} + B_bar u_t,   y_t = 2 Re(C x_t) + D u_t
    <=> y = K * u + D u,   K_l = 2 Re(sum_n C_n B_bar_n A_bar_n^l)

Training and prefill run the convolution form through the FFT; a call that continues from a state
adds the state's decayed readout 2 Re(C A_bar^(j+1) x) and returns the state after its last token,
so decoding one token costs O(1) in the sequence length. Returned states are detached (no
backpropagation across calls; training runs whole sequences).

Padding (key_padding_mask, True = real): padded keys and values are zeroed before the shift SSM,
so a padded position feeds nothing into either SSM. A padded position is still a time step: left
padding (before any real token) and right padding (after the last) give the real positions the
outputs the unpadded sequence gives, because both SSMs are time-invariant and a zero input leaves a
zero state zero; a pad between real tokens would still advance the shift window and the decay.
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


class H3State(NamedTuple):
    """H3 after ``offset`` tokens; its size does not grow with the sequence.

    k_past: the last shift_size - 1 keys (B, H * D, shift_size - 1), the shift SSM's state;
    ssm: the diagonal SSM's state (B, G, d_h, d_h, N / 2), complex: N / 2 modes for each entry of
    each head's d_h x d_h matrix K_bar V^T.
    """

    k_past: Tensor
    ssm: Tensor
    offset: int


class H3(nn.Module):
    """H3 over (batch, heads, tokens, head_dim) q, k, v; built as ``H3(num_heads=, head_dim=, causal=)``.

    state_size: N, the diagonal SSM's state per channel (N / 2 complex modes); shift_size: m, the
    shift SSM's taps (the public H3 code uses m = N = 64). ssm_head_dim: d_h, the head size of
    H3's multi-head form; None takes the attention's head_dim (d_h x d_h state per head), 1 is the
    elementwise form y = q * SSM_diag(SSM_shift(k) * v) of the released H3 language models.
    dt_min, dt_max: the range log dt is drawn from uniformly (S4D).
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        causal: bool = True,
        state_size: int = 64,
        shift_size: int = 64,
        ssm_head_dim: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        causal_only("H3", causal)
        channels = num_heads * head_dim
        d_h = head_dim if ssm_head_dim is None else ssm_head_dim
        if d_h < 1 or channels % d_h:
            raise ValueError(
                f"ssm_head_dim={ssm_head_dim} must divide num_heads * head_dim = {channels}; use a divisor "
                "(1 for the elementwise form) or null for the attention's head_dim"
            )
        if state_size < 2 or state_size % 2:
            raise ValueError(
                f"state_size={state_size} must be even (the diagonal SSM keeps N/2 complex conjugate pairs)"
            )
        if shift_size < 1:
            raise ValueError(f"shift_size={shift_size} must be at least 1 (taps over the last keys)")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.num_heads, self.head_dim, self.causal = num_heads, head_dim, causal
        self.ssm_head_dim, self.groups = d_h, channels // d_h
        self.check_finite = check_finite
        modes = state_size // 2
        # shift SSM: C = taps for lags 0..m-1 (Conv1d-style uniform init, as the H3 code), D ~ N(0, 1)
        bound = 1 / math.sqrt(shift_size)
        self.shift_taps = nn.Parameter(torch.empty(channels, shift_size).uniform_(-bound, bound))
        self.shift_d = nn.Parameter(torch.randn(channels))
        # diagonal SSM per head (S4D-Lin init, B = 1, C ~ complex normal, D ~ N(0, 1))
        log_dt = torch.rand(self.groups) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_a_real = nn.Parameter(torch.full((self.groups, modes), math.log(0.5)))
        self.a_imag = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32).repeat(self.groups, 1))
        self.b = nn.Parameter(torch.view_as_real(torch.ones(self.groups, modes, dtype=torch.cfloat)).clone())
        self.c = nn.Parameter(torch.view_as_real(torch.randn(self.groups, modes, dtype=torch.cfloat)).clone())
        self.d = nn.Parameter(torch.randn(self.groups))

    def discretize(self) -> tuple[Tensor, Tensor, Tensor]:
        """dt A (G, N/2), B_bar and C (G, N/2), complex: the zero-order-hold discretisation."""
        dt = torch.exp(self.log_dt)[:, None]
        a = torch.complex(-torch.exp(self.log_a_real), self.a_imag)
        dt_a = dt * a
        b_bar = (torch.exp(dt_a) - 1) / a * torch.view_as_complex(self.b)  # B_bar = (exp(dt A) - 1) / A * B
        return dt_a, b_bar, torch.view_as_complex(self.c)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cache: H3State | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, H3State]:
        check_mixer_inputs("H3", q, k, v, self.num_heads, self.head_dim, key_padding_mask, self.check_finite)
        b, _, t, _ = q.shape
        out_dtype = v.dtype
        dtype = torch.promote_types(torch.promote_types(q.dtype, torch.float32), self.log_dt.dtype)
        with torch.autocast(q.device.type, enabled=False):
            q, k, v = (to_channels(x).to(dtype) for x in (q, k, v))  # (B, C, T), float32 or float64
            if key_padding_mask is not None:
                keep = key_padding_mask.to(k.dtype)[:, None, :]
                k, v = k * keep, v * keep
            # K_bar = SSM_shift(K): taps over the last m keys, plus D k_t
            k_bar, k_past = causal_conv(k, self.shift_taps, None if cache is None else cache.k_past)
            k_bar = k_bar + self.shift_d[:, None] * k
            g, d_h = self.groups, self.ssm_head_dim
            q_h, k_h, v_h = (x.view(b, g, d_h, t) for x in (q, k_bar, v))
            # K_bar^(h) (V^(h))^T, a d_h x d_h matrix per head and token: (B, G, d_h, d_h, T)
            u = k_h[:, :, :, None, :] * v_h[:, :, None, :, :]
            dt_a, b_bar, c = self.discretize()
            # A_bar^l = exp(l dt A) = exp(l Re dt A) (cos + i sin)(l Im dt A) for l = 0..T, in real
            # arithmetic (a complex exp of as many entries is several times slower on CPU)
            steps = torch.arange(t + 1, device=u.device, dtype=dt_a.real.dtype)
            magnitude = torch.exp(dt_a.real[..., None] * steps)
            angle = dt_a.imag[..., None] * steps
            re, im = magnitude * torch.cos(angle), magnitude * torch.sin(angle)
            powers = torch.complex(re, im)
            # K_l = 2 Re(sum_n C_n B_bar_n A_bar_n^l)
            cb = c * b_bar
            kernel = 2 * (cb.real[..., None] * re[..., :t] - cb.imag[..., None] * im[..., :t]).sum(-2)
            kv = fftconv(u, kernel[:, None, None, :], self.d[:, None, None])  # KV = SSM_diag(K_bar V^T)
            if cache is not None:  # plus the state's readout 2 Re(C A_bar^(j+1) x)
                readout = c[..., None] * powers[..., 1:]
                kv = kv + 2 * torch.einsum("bgijn,gnt->bgijt", cache.ssm, readout).real
            out = torch.einsum("bgit,bgijt->bgjt", q_h, kv)  # O_t = Q_t^T KV_t
            with torch.no_grad():
                ssm = self._next_state(u, b_bar, powers, None if cache is None else cache.ssm)
        out = from_channels(out.reshape(b, g * d_h, t), self.num_heads).to(out_dtype)
        offset = t if cache is None else cache.offset + t
        return out, H3State(k_past.detach(), ssm, offset)

    @staticmethod
    def _next_state(u: Tensor, b_bar: Tensor, powers: Tensor, previous: Tensor | None) -> Tensor:
        """x_T = A_bar^T x_0 + sum_j A_bar^(T-1-j) B_bar u_j, the state after this call's last token."""
        t = u.shape[-1]
        weights = torch.view_as_real(b_bar[..., None] * powers[..., :t].flip(-1))  # (G, N/2, T, 2)
        state = torch.view_as_complex(torch.einsum("bgijt,gntc->bgijnc", u, weights).contiguous())
        if previous is not None:
            state = state + powers[..., t][:, None, None, :] * previous
        return state
