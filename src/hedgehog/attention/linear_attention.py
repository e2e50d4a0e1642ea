"""Linear attention given features, in the forms that compute the same function.

Notation: features fq = phi(q), fk = phi(k) of shape (B, H, T, F),
values v of shape (B, H, T, Dv). Causal output

    y_n = fq_n . S_n / (fq_n . z_n + eps),  S_n = sum_{i<=n} fk_i v_i^T,  z_n = sum_{i<=n} fk_i

- quadratic: A = fq fk^T, causal mask, rows divided by their sums (reference, distillation);
- chunked: quadratic inside a chunk plus the state carried from earlier chunks (training);
- recurrent: one token at a time from a carried state (generation).
S and z are accumulated in float32; outputs come back in the dtype of v.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

DEFAULT_EPS = 1e-6


def upcast(x: Tensor) -> Tensor:
    """x in its accumulation dtype: float32 for half types, float64 kept as float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class LinearAttentionState(NamedTuple):
    """The recurrent state after `offset` tokens: kv = S (B, H, F, Dv), k_sum = z (B, H, F)."""

    kv: Tensor
    k_sum: Tensor
    offset: int

    @classmethod
    def zeros(cls, fk: Tensor, v: Tensor) -> LinearAttentionState:
        b, h, _, f = fk.shape
        dtype = torch.promote_types(v.dtype, torch.float32)
        kv = torch.zeros(b, h, f, v.shape[-1], device=v.device, dtype=dtype)
        return cls(kv, torch.zeros(b, h, f, device=v.device, dtype=dtype), 0)


def check_features(fq: Tensor, fk: Tensor, v: Tensor) -> None:
    """Raise a clear error when features and values do not share the (B, H, T, .) layout."""
    for name, x in (("fq", fq), ("fk", fk), ("v", v)):
        if x.dim() != 4:
            raise ValueError(
                f"{name} must be laid out (batch, heads, tokens, dim), got shape {tuple(x.shape)}"
            )
    if fq.shape[:2] != fk.shape[:2] or fk.shape[:2] != v.shape[:2]:
        raise ValueError(
            f"batch and heads must match: fq {tuple(fq.shape)}, fk {tuple(fk.shape)}, v {tuple(v.shape)}"
        )
    if fq.shape[-1] != fk.shape[-1]:
        raise ValueError(f"fq and fk need the same feature dim, got {fq.shape[-1]} and {fk.shape[-1]}")
    if fk.shape[2] != v.shape[2]:
        raise ValueError(f"fk and v need the same number of tokens, got {fk.shape[2]} and {v.shape[2]}")


def causal_mask(t_q: int, t_k: int, device: torch.device) -> Tensor:
    """Boolean (t_q, t_k) mask, True where query i may see key j (queries are the last t_q keys)."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def linear_attention_weights(fq: Tensor, fk: Tensor, causal: bool, eps: float = DEFAULT_EPS) -> Tensor:
    """The normalised (B, H, Tq, Tk) weights a_ij = fq_i.fk_j / sum_j' fq_i.fk_j' in float32."""
    scores = upcast(fq) @ upcast(fk).transpose(-1, -2)
    if causal:
        scores = scores.masked_fill(~causal_mask(fq.shape[-2], fk.shape[-2], fq.device), 0.0)
    return scores / (scores.sum(-1, keepdim=True) + eps)


def quadratic_linear_attention(
    fq: Tensor, fk: Tensor, v: Tensor, causal: bool = True, eps: float = DEFAULT_EPS
) -> Tensor:
    """Materialised linear attention: O(T^2) memory; the test reference."""
    check_features(fq, fk, v)
    return (linear_attention_weights(fq, fk, causal, eps) @ upcast(v)).to(v.dtype)


def kernel_linear_attention(scores: Tensor, v: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Non-causal linear attention from its kernel values scores_ij = fq_i . fk_j (B, H, Tq, Tk), for maps
    whose kernel has a closed form (``FeatureMap.kernel``): the same function as the feature form."""
    scores = upcast(scores)
    return ((scores / (scores.sum(-1, keepdim=True) + eps)) @ upcast(v)).to(v.dtype)


def noncausal_linear_attention(fq: Tensor, fk: Tensor, v: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Encoder form: y_n = fq_n . (sum_i fk_i v_i^T) / (fq_n . sum_i fk_i + eps)."""
    check_features(fq, fk, v)
    fq, fk = upcast(fq), upcast(fk)
    kv = fk.transpose(-1, -2) @ upcast(v)
    den = fq @ fk.sum(-2).unsqueeze(-1)
    return ((fq @ kv) / (den + eps)).to(v.dtype)


def chunked_linear_attention(
    fq: Tensor,
    fk: Tensor,
    v: Tensor,
    chunk_size: int = 64,
    eps: float = DEFAULT_EPS,
    state: LinearAttentionState | None = None,
) -> tuple[Tensor, LinearAttentionState]:
    """Causal linear attention chunk by chunk, carrying (S, z) between chunks.

    Peak extra memory per step is O(chunk^2 + F Dv) per head; the length need not be a
    multiple of the chunk. ``state`` continues a sequence (prefill after earlier tokens).
    """
    check_features(fq, fk, v)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    state = state or LinearAttentionState.zeros(fk, v)
    kv, k_sum = state.kv, state.k_sum
    t = fq.shape[-2]
    mask = causal_mask(chunk_size, chunk_size, fq.device)
    outputs = []
    for start in range(0, t, chunk_size):
        end = min(start + chunk_size, t)
        q_c, k_c, v_c = (
            upcast(fq[..., start:end, :]),
            upcast(fk[..., start:end, :]),
            upcast(v[..., start:end, :]),
        )
        n = end - start
        scores = (q_c @ k_c.transpose(-1, -2)).masked_fill(~mask[:n, :n], 0.0)
        num = scores @ v_c + q_c @ kv
        den = scores.sum(-1, keepdim=True) + q_c @ k_sum.unsqueeze(-1)
        outputs.append(num / (den + eps))
        kv = kv + k_c.transpose(-1, -2) @ v_c
        k_sum = k_sum + k_c.sum(-2)
    out = torch.cat(outputs, dim=-2).to(v.dtype)
    return out, LinearAttentionState(kv, k_sum, state.offset + t)


def recurrent_linear_attention(
    fq: Tensor,
    fk: Tensor,
    v: Tensor,
    eps: float = DEFAULT_EPS,
    state: LinearAttentionState | None = None,
) -> tuple[Tensor, LinearAttentionState]:
    """Causal linear attention one token at a time: S += fk v^T, z += fk, y = fq S / (fq z)."""
    check_features(fq, fk, v)
    state = state or LinearAttentionState.zeros(fk, v)
    kv, k_sum = state.kv, state.k_sum
    outputs = []
    for i in range(fq.shape[-2]):
        q_i, k_i, v_i = upcast(fq[..., i, :]), upcast(fk[..., i, :]), upcast(v[..., i, :])
        kv = kv + k_i.unsqueeze(-1) * v_i.unsqueeze(-2)
        k_sum = k_sum + k_i
        num = (q_i.unsqueeze(-2) @ kv).squeeze(-2)
        den = (q_i * k_sum).sum(-1, keepdim=True)
        outputs.append(num / (den + eps))
    out = torch.stack(outputs, dim=-2).to(v.dtype)
    return out, LinearAttentionState(kv, k_sum, state.offset + fq.shape[-2])
