"""Attention distillation (method.md, Sec. 5): teach phi to mimic softmax attention weights.

Teacher: a = softmax(q k^T / sqrt(d)) from the frozen q, k. Student: the linear attention
weights a_hat = phi_q(q) . phi_k(k_j) / sum_j' phi_q(q) . phi_k(k_j') from the same q, k.

    xent: -sum_j a_j log a_hat_j        (the paper's soft-label cross-entropy)
    kl:   sum_j a_j (log a_j - log a_hat_j) = xent - H(a)
    mse:  |y_linear - y_softmax|^2      (output matching, LoLCATs; needs no T x T weights)

Losses are averaged over batch, heads and query rows; causally masked entries count
for nothing. Weights are built one query chunk at a time under activation
checkpointing, so one call holds O(chunk x T) weights, never O(T^2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from hedgehog.attention.linear_attention import (
    DEFAULT_EPS,
    chunked_linear_attention,
    noncausal_linear_attention,
    upcast,
)

LOSSES = ("xent", "kl", "mse")


def softmax_attention_weights(q: Tensor, k: Tensor, causal: bool, q_offset: int = 0) -> Tensor:
    """Teacher weights (B, H, Tq, Tk) in float32 for the queries at positions q_offset + i."""
    scores = (upcast(q) @ upcast(k).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        rows = torch.arange(q_offset, q_offset + q.shape[-2], device=q.device)[:, None]
        scores = scores.masked_fill(torch.arange(k.shape[-2], device=q.device)[None] > rows, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _chunk_xent(
    q: Tensor, k: Tensor, fq: Tensor, fk: Tensor, causal: bool, q_offset: int, eps: float
) -> tuple[Tensor, Tensor]:
    """Sum over rows of -sum a log a_hat and of -sum a log a, for one query chunk."""
    teacher = softmax_attention_weights(q, k, causal, q_offset)
    scores = upcast(fq) @ upcast(fk).transpose(-1, -2)
    if causal:
        rows = torch.arange(q_offset, q_offset + q.shape[-2], device=q.device)[:, None]
        scores = scores.masked_fill(torch.arange(k.shape[-2], device=q.device)[None] > rows, 0.0)
    # masked entries have teacher weight 0; the clamp keeps 0 * log(0) out of the sum
    log_student = torch.log((scores + eps).clamp_min(1e-30)) - torch.log(scores.sum(-1, keepdim=True) + eps)
    xent = -(teacher * log_student).sum()
    entropy = -(teacher * torch.log(teacher.clamp_min(1e-30))).sum()
    return xent, entropy


def attention_distillation_loss(
    q: Tensor,
    k: Tensor,
    fq: Tensor,
    fk: Tensor,
    causal: bool,
    loss: str = "xent",
    v: Tensor | None = None,
    query_chunk: int = 256,
    eps: float = DEFAULT_EPS,
) -> Tensor:
    """Distillation loss of one attention layer, averaged over (batch, head, query row).

    q, k: the teacher's queries and keys (B, H, T, D); fq, fk: the student's features of
    them (B, H, T, F); v: values, needed only for ``loss="mse"``.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown distillation loss {loss!r}; choose one of {LOSSES}")
    if q.shape != k.shape or q.dim() != 4:
        raise ValueError(
            f"q and k must both be (batch, heads, tokens, dim), got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if fq.shape[:3] != q.shape[:3] or fk.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"features {tuple(fq.shape)} and {tuple(fk.shape)} do not match q, k {tuple(q.shape)}"
        )
    if loss == "mse":
        if v is None:
            raise ValueError("loss='mse' matches attention outputs and needs the values v")
        with torch.no_grad():
            target = F.scaled_dot_product_attention(upcast(q), upcast(k), upcast(v), is_causal=causal)
        if causal:
            student, _ = chunked_linear_attention(fq, fk, upcast(v), chunk_size=query_chunk, eps=eps)
        else:
            student = noncausal_linear_attention(fq, fk, upcast(v), eps=eps)
        return F.mse_loss(upcast(student), target)

    q, k = q.detach(), k.detach()
    total_xent = fq.new_zeros((), dtype=torch.float32)
    total_entropy = fq.new_zeros((), dtype=torch.float32)
    t = q.shape[-2]
    for start in range(0, t, query_chunk):
        end = min(start + query_chunk, t)
        args = (q[..., start:end, :], k, fq[..., start:end, :], fk, causal, start, eps)
        if torch.is_grad_enabled() and (fq.requires_grad or fk.requires_grad):
            xent, entropy = checkpoint(_chunk_xent, *args, use_reentrant=False)
        else:
            xent, entropy = _chunk_xent(*args)
        total_xent = total_xent + xent
        total_entropy = total_entropy + entropy.detach()
    rows = q.shape[0] * q.shape[1] * t
    if loss == "kl":
        return (total_xent - total_entropy) / rows
    return total_xent / rows
