"""Sliding-window hybrid attention (LoLCATs): exact softmax over the last w keys, linear attention before them.

LoLCATs (Zhang et al., arXiv:2410.10254, the "sliding window + linear attention" equation of the
method; released with w = 64 and the window factor starting at 0.1). For query i, scores
s_ij = q_i . k_j / sqrt(d), the key mask mu_j (False for padding), the window
W_i = {j : i - w < j <= i, mu_j} and the keys before it L_i = {j : j <= i - w, mu_j}:

    m_i  = max_{j in W_i} s_ij                      (0 when W_i is empty: a padded query row)
    a_ij = gamma_h exp(s_ij - m_i)                  j in W_i   (softmax part)
    a_ij = phi(q_i) . phi(k_j)                      j in L_i   (linear part)
    y_i  = sum_j a_ij v_j / (sum_j a_ij + eps)      one normaliser over both parts

gamma_h = sigmoid(theta_h) is a learnable factor per head (``SlidingWindowLinearAttention``).

The shift m_i is part of the function, as in LoLCATs, not a stabiliser that cancels: the linear
terms are not scaled by exp(-m_i). It pins the window's largest term whatever the size of q.k, so
the two parts meet at comparable scales (the softmax-form Hedgehog phi(q).phi(k) lies in (0, 2]);
with unshifted exp(s) the linear share would vanish once scores pass a few units. As a consequence
no term overflows at any |q.k| (window terms far below the max underflow to 0, as in softmax), and
gradients flow through m_i like any other term. The forms compute these weights with numerator and
denominator divided by gamma_h (phi(q) / gamma_h in the linear part, exp(s - m_i) in the window):
the same weights, but the window's largest term is exactly 1, so every real row's denominator is at
least 1 and eps (which only keeps padded rows, with nothing in their window, finite) moves a real
row by at most eps relative, never eps / gamma_h.

Three forms compute the same function (inputs: q, k, v (B, H, T, .), features fq, fk (B, H, T, F),
gamma (H,)); everything is accumulated in float32 (float64 kept), outputs come back in v's dtype:

- quadratic: the materialised (T x T) weights (``window_attention_weights``; reference, distillation);
- chunked: per query chunk, the keys that left every window of the chunk through the linear state
  (S, z), the rest (at most chunk + w - 1 keys) exactly: O(T (chunk + w)) memory, never O(T^2);
- recurrent: one token at a time from ``WindowAttentionState`` (generation).

They run with autocast off: under autocast the float32 matmuls would come back in half precision,
and a score of 20 rounded to bf16 moves exp(s - m) by up to 6%.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import torch
from torch import Tensor

from hedgehog.attention.linear_attention import DEFAULT_EPS, LinearAttentionState, check_features, upcast

Fn = TypeVar("Fn", bound=Callable)


def _autocast_off(fn: Fn) -> Fn:
    """Run ``fn`` (whose first argument is a tensor) with autocast off on that tensor's device."""

    @functools.wraps(fn)
    def run(x: Tensor, *args, **kwargs):
        with torch.autocast(x.device.type, enabled=False):
            return fn(x, *args, **kwargs)

    return run  # type: ignore[return-value]


class WindowAttentionState(NamedTuple):
    """The state after ``offset`` tokens, of fixed size once offset >= window - 1.

    kv = S (B, H, F, Dv) and k_sum = z (B, H, F): the linear part of the keys no later query sees
    in its window (positions <= offset - window); keys (B, H, P, D), key_features (B, H, P, F),
    values (B, H, P, Dv) and key_mask (B, P): the last P = min(offset, window - 1) tokens, which
    later queries still see exactly (padded ones masked). Every tensor field has the batch first.
    """

    kv: Tensor
    k_sum: Tensor
    offset: int
    keys: Tensor
    key_features: Tensor
    values: Tensor
    key_mask: Tensor

    @classmethod
    def zeros(cls, k: Tensor, fk: Tensor, v: Tensor) -> WindowAttentionState:
        linear = LinearAttentionState.zeros(fk, v)
        b, h = k.shape[:2]
        return cls(
            linear.kv,
            linear.k_sum,
            0,
            k.new_zeros(b, h, 0, k.shape[-1]),
            fk.new_zeros(b, h, 0, fk.shape[-1]),
            v.new_zeros(b, h, 0, v.shape[-1]),
            torch.ones(b, 0, dtype=torch.bool, device=k.device),
        )


def _check(
    q: Tensor, k: Tensor, v: Tensor, fq: Tensor, fk: Tensor, window: int, window_factor: Tensor
) -> None:
    """Raise a clear error for mismatched layouts, a window below 1 or a factor that is not one per head."""
    check_features(fq, fk, v)
    if q.shape[:3] != fq.shape[:3] or k.shape[:3] != fk.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q, k must be (batch, heads, tokens, dim) like their features: got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, fq {tuple(fq.shape)}, fk {tuple(fk.shape)}"
        )
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive number of keys, got {window!r}")
    if window_factor.shape != (q.shape[1],):
        raise ValueError(
            f"window_factor must hold one factor per head, shape ({q.shape[1]},); got {tuple(window_factor.shape)}"
        )


def _key_mask(key_padding_mask: Tensor | None, k: Tensor) -> Tensor:
    """(B, T) bool, True for real keys, from an optional mask of any 0/1 dtype."""
    if key_padding_mask is None:
        return torch.ones(k.shape[0], k.shape[-2], dtype=torch.bool, device=k.device)
    if key_padding_mask.shape != (k.shape[0], k.shape[-2]):
        raise ValueError(
            f"key_padding_mask must be (batch, tokens) = {(k.shape[0], k.shape[-2])}, True for real "
            f"tokens; got shape {tuple(key_padding_mask.shape)}"
        )
    return key_padding_mask.to(device=k.device, dtype=torch.bool)


def _linear_queries(fq: Tensor, window_factor: Tensor) -> Tensor:
    """phi(q) / gamma_h (gamma_h > 0) in float32: the linear part's query features, beside window terms exp(s - m)."""
    fq = upcast(fq)
    return fq / window_factor.to(fq.dtype)[:, None, None]


def _hybrid_scores(
    q: Tensor,
    k: Tensor,
    fq: Tensor,
    fk: Tensor,
    window: int,
    rows: Tensor,
    cols: Tensor,
    key_mask: Tensor | None,
) -> Tensor:
    """Unnormalised weights a_ij / gamma_h (B, H, Tq, Tk) of the queries at positions ``rows`` over the keys at
    ``cols``; fq are the linear queries phi(q) / gamma_h."""
    q, k, fk = upcast(q), upcast(k), upcast(fk)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    lag = rows[:, None] - cols[None, :]  # i - j
    in_window, before = (lag >= 0) & (lag < window), lag >= window
    if key_mask is not None:
        keys = key_mask[:, None, None, :]
        in_window, before = in_window & keys, before & keys
    # -inf outside the window before exp: no overflow there, and no NaN in the backward of exp
    window_scores = scores.masked_fill(~in_window, float("-inf"))
    m = window_scores.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # a row with no real key in its window
    softmax_part = torch.exp(window_scores - m)  # gamma_h exp(s_ij - m_i) / gamma_h, j in W_i
    linear_part = (fq @ fk.transpose(-1, -2)) * before  # phi(q_i) . phi(k_j) / gamma_h, j in L_i
    return softmax_part + linear_part


@_autocast_off
def window_attention_weights(
    q: Tensor,
    k: Tensor,
    fq: Tensor,
    fk: Tensor,
    window: int,
    window_factor: Tensor,
    q_offset: int = 0,
    key_padding_mask: Tensor | None = None,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """The hybrid's normalised weights (B, H, Tq, Tk) for the queries at positions q_offset + r over keys 0..Tk-1.

    Future keys and padded keys get weight 0. What the quadratic form multiplies by v and what
    attention distillation trains (one query chunk at a time).
    """
    rows = torch.arange(q_offset, q_offset + q.shape[-2], device=q.device)
    cols = torch.arange(k.shape[-2], device=q.device)
    mask = None if key_padding_mask is None else _key_mask(key_padding_mask, k)
    a = _hybrid_scores(q, k, _linear_queries(fq, window_factor), fk, window, rows, cols, mask)
    return a / (a.sum(-1, keepdim=True) + eps)


@_autocast_off
def quadratic_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    fq: Tensor,
    fk: Tensor,
    window: int,
    window_factor: Tensor,
    eps: float = DEFAULT_EPS,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Materialised hybrid attention: O(T^2) memory; the reference form."""
    _check(q, k, v, fq, fk, window, window_factor)
    weights = window_attention_weights(q, k, fq, fk, window, window_factor, 0, key_padding_mask, eps)
    return (weights @ upcast(v)).to(v.dtype)


def _fold(kv: Tensor, k_sum: Tensor, fk: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Add keys that left every later window to the linear state: S += fk^T v, z += sum fk."""
    fk, v = upcast(fk), upcast(v)
    return kv + fk.transpose(-1, -2) @ v, k_sum + fk.sum(-2)


def _extend(
    state: WindowAttentionState, k: Tensor, fk: Tensor, v: Tensor, key_padding_mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The buffered tokens followed by the new ones: keys, features (zero where padded), values, mask."""
    mask = _key_mask(key_padding_mask, k)
    fk = fk * mask[:, None, :, None].to(fk.dtype)  # padded keys never enter the linear part
    return (
        torch.cat([state.keys, k], dim=-2),
        torch.cat([state.key_features, fk], dim=-2),
        torch.cat([state.values, v], dim=-2),
        torch.cat([state.key_mask, mask], dim=-1),
    )


def _carry(
    kv: Tensor,
    k_sum: Tensor,
    offset: int,
    tokens: tuple[Tensor, Tensor, Tensor, Tensor],
    folded: int,
    window: int,
) -> WindowAttentionState:
    """Fold the tokens from ``folded`` up to the last window - 1 into (S, z); keep those last ones (copied)."""
    keys, features, values, mask = tokens
    keep = max(folded, keys.shape[-2] - (window - 1))
    kv, k_sum = _fold(kv, k_sum, features[..., folded:keep, :], values[..., folded:keep, :])
    # clones: slices would keep the whole sequence's keys alive in a generation cache
    return WindowAttentionState(
        kv,
        k_sum,
        offset,
        keys[..., keep:, :].clone(),
        features[..., keep:, :].clone(),
        values[..., keep:, :].clone(),
        mask[:, keep:].clone(),
    )


@_autocast_off
def window_attention_state(
    k: Tensor, fk: Tensor, v: Tensor, window: int, key_padding_mask: Tensor | None = None
) -> WindowAttentionState:
    """The state after the tokens k, v from the start of a sequence (what the quadratic form hands on)."""
    state = WindowAttentionState.zeros(k, fk, v)
    tokens = _extend(state, k, fk, v, key_padding_mask)
    return _carry(state.kv, state.k_sum, k.shape[-2], tokens, 0, window)


@_autocast_off
def window_state_after(
    kv: Tensor,
    k_sum: Tensor,
    k: Tensor,
    fk: Tensor,
    v: Tensor,
    window: int,
    key_padding_mask: Tensor | None = None,
) -> WindowAttentionState:
    """The state after the tokens k, v from the start of a sequence, given the linear state (kv, k_sum) of
    all of them (float32, padded keys left out; what ``hedgehog.kernels.window_attention`` returns): the
    last window - 1 tokens come out of it again and are kept exactly, as ``window_attention_state`` keeps them."""
    mask = _key_mask(key_padding_mask, k)
    keep = max(0, k.shape[-2] - (window - 1))
    last = fk[..., keep:, :] * mask[:, None, keep:, None].to(fk.dtype)
    if keep == 0:  # every token is still in a window: nothing linear yet
        kv, k_sum = torch.zeros_like(kv), torch.zeros_like(k_sum)
    else:
        kv, k_sum = _fold(kv, k_sum, -last, v[..., keep:, :])
    return WindowAttentionState(
        kv,
        k_sum,
        k.shape[-2],
        k[..., keep:, :].clone(),
        last.clone(),
        v[..., keep:, :].clone(),
        mask[:, keep:].clone(),
    )


def _check_continuation(q: Tensor, k: Tensor, state: WindowAttentionState | None) -> None:
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"hybrid attention is self-attention over new tokens: q has {q.shape[-2]} tokens, k has "
            f"{k.shape[-2]}; earlier tokens live in the state, pass it as state="
        )
    if state is not None and state.keys.shape[:2] != k.shape[:2]:
        raise ValueError(
            f"the state holds batch and heads {tuple(state.keys.shape[:2])} but k has {tuple(k.shape[:2])}; "
            "start a new state for a new batch"
        )


@_autocast_off
def chunked_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    fq: Tensor,
    fk: Tensor,
    window: int,
    window_factor: Tensor,
    chunk_size: int = 64,
    eps: float = DEFAULT_EPS,
    key_padding_mask: Tensor | None = None,
    state: WindowAttentionState | None = None,
) -> tuple[Tensor, WindowAttentionState]:
    """Hybrid attention one query chunk at a time; ``state`` continues a sequence.

    For the chunk's queries (positions i in [a, b)), every key before a - w + 1 lies before every
    window: those come from the linear state (S, z). Keys from a - w + 1 to b - 1 are scored exactly
    (window or linear by their lag), a (b - a) x (b - a + w - 1) block.
    """
    _check(q, k, v, fq, fk, window, window_factor)
    _check_continuation(q, k, state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    state = state or WindowAttentionState.zeros(k, fk, v)
    tokens = _extend(state, k, fk, v, key_padding_mask)
    keys, features, values, mask = tokens
    buffered = state.keys.shape[-2]  # token r of this call is token buffered + r of the extended arrays
    fq = _linear_queries(fq, window_factor)
    kv, k_sum = state.kv, state.k_sum
    folded, outputs = 0, []
    for start in range(0, q.shape[-2], chunk_size):
        end = min(start + chunk_size, q.shape[-2])
        first = max(folded, buffered + start - window + 1)
        kv, k_sum = _fold(kv, k_sum, features[..., folded:first, :], values[..., folded:first, :])
        folded, last = first, buffered + end
        fq_c = fq[..., start:end, :]
        a = _hybrid_scores(
            q[..., start:end, :],
            keys[..., first:last, :],
            fq_c,
            features[..., first:last, :],
            window,
            torch.arange(buffered + start, buffered + end, device=q.device),
            torch.arange(first, last, device=q.device),
            mask[:, first:last],
        )
        num = a @ upcast(values[..., first:last, :]) + fq_c @ kv
        den = a.sum(-1, keepdim=True) + fq_c @ k_sum.unsqueeze(-1)
        outputs.append(num / (den + eps))
    out = torch.cat(outputs, dim=-2).to(v.dtype)
    return out, _carry(kv, k_sum, state.offset + q.shape[-2], tokens, folded, window)


@_autocast_off
def recurrent_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    fq: Tensor,
    fk: Tensor,
    window: int,
    window_factor: Tensor,
    eps: float = DEFAULT_EPS,
    key_padding_mask: Tensor | None = None,
    state: WindowAttentionState | None = None,
) -> tuple[Tensor, WindowAttentionState]:
    """Hybrid attention one token at a time: the window from the buffer plus the new key, the rest from (S, z).

    After each token the oldest buffered key, which no later window reaches, moves into (S, z),
    so the buffer never holds more than window - 1 tokens.
    """
    _check(q, k, v, fq, fk, window, window_factor)
    _check_continuation(q, k, state)
    state = state or WindowAttentionState.zeros(k, fk, v)
    mask_new = _key_mask(key_padding_mask, k)
    fk = fk * mask_new[:, None, :, None].to(fk.dtype)
    fq = _linear_queries(fq, window_factor)
    kv, k_sum = state.kv, state.k_sum
    keys, features, values, mask = state.keys, state.key_features, state.values, state.key_mask
    outputs = []
    for i in range(q.shape[-2]):
        keys = torch.cat([keys, k[..., i : i + 1, :]], dim=-2)
        features = torch.cat([features, fk[..., i : i + 1, :]], dim=-2)
        values = torch.cat([values, v[..., i : i + 1, :]], dim=-2)
        mask = torch.cat([mask, mask_new[:, i : i + 1]], dim=-1)
        n = keys.shape[-2]
        positions = torch.arange(n, device=q.device)
        fq_i = fq[..., i : i + 1, :]
        a = _hybrid_scores(
            q[..., i : i + 1, :], keys, fq_i, features, window, positions[-1:], positions, mask
        )
        num = a @ upcast(values) + fq_i @ kv
        den = a.sum(-1, keepdim=True) + fq_i @ k_sum.unsqueeze(-1)
        outputs.append(num / (den + eps))
        leaving = n - (window - 1)  # 0 or 1: the key the next query's window no longer reaches
        if leaving > 0:
            kv, k_sum = _fold(kv, k_sum, features[..., :leaving, :], values[..., :leaving, :])
            keys, features, values = (x[..., leaving:, :] for x in (keys, features, values))
            mask = mask[:, leaving:]
    out = torch.cat(outputs, dim=-2).to(v.dtype)
    return out, WindowAttentionState(kv, k_sum, state.offset + q.shape[-2], keys, features, values, mask)
