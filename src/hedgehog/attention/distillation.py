"""Attention distillation (Hedgehog's stage 1, Zhang et al. 2024): teach phi to mimic softmax attention weights.

Teacher: a = softmax(q k^T / sqrt(d)) from the frozen q, k. Student: the linear attention
weights a_hat = phi_q(q) . phi_k(k_j) / sum_j' phi_q(q) . phi_k(k_j') from the same q, k.

    xent: -sum_j a_j log a_hat_j        (the paper's soft-label cross-entropy)
    kl:   sum_j a_j (log a_j - log a_hat_j) = xent - H(a)
    mse:  |y_linear - y_softmax|^2      (output matching, LoLCATs; needs no T x T weights)

The sliding-window hybrid (``window=``, ``window_factor=``; hedgehog.attention.window) is distilled
the same way, its student weights being the hybrid's: gamma_h exp(s - m) inside the window and
phi(q).phi(k) before it, in one normaliser; with ``mse`` the student output is the hybrid's output.

Losses are averaged over batch, heads and query rows; causally masked entries count
for nothing. With a key-padding mask (padded batches), padded keys get neither teacher nor
student weight and padded query rows are left out of the mean, so a padded batch gives the
loss of its sequences unpadded, in one vectorised pass. Weights are built one query chunk at
a time under activation checkpointing, so one call holds O(chunk x T) weights, never O(T^2).
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
from hedgehog.attention.window import chunked_window_attention, window_attention_weights

LOSSES = ("xent", "kl", "mse")


def _visible(
    q_len: int, k_len: int, causal: bool, q_offset: int, key_mask: Tensor | None, device
) -> Tensor | None:
    """Boolean mask of the (query, key) pairs that count: (B, 1, Tq, Tk), (Tq, Tk), or None for all."""
    visible = None
    if causal:
        rows = torch.arange(q_offset, q_offset + q_len, device=device)[:, None]
        visible = torch.arange(k_len, device=device)[None] <= rows
    if key_mask is not None:
        keys = key_mask[:, None, None, :]
        visible = keys if visible is None else keys & visible
    return visible


def softmax_attention_weights(
    q: Tensor, k: Tensor, causal: bool, q_offset: int = 0, key_padding_mask: Tensor | None = None
) -> Tensor:
    """Teacher weights (B, H, Tq, Tk) in float32 for the queries at positions q_offset + i.

    Padded keys (``key_padding_mask`` False) get weight 0; a row that sees no key at all is all 0.
    """
    scores = (upcast(q) @ upcast(k).transpose(-1, -2)) / math.sqrt(q.shape[-1])
    visible = _visible(q.shape[-2], k.shape[-2], causal, q_offset, key_padding_mask, q.device)
    if visible is None:
        return torch.softmax(scores, dim=-1)
    weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    return weights.nan_to_num(0.0)  # rows with every key masked: softmax of all -inf


def _chunk_xent(
    q: Tensor,
    k: Tensor,
    fq: Tensor,
    fk: Tensor,
    causal: bool,
    q_offset: int,
    eps: float,
    key_mask: Tensor | None,
    query_mask: Tensor | None,
    window: int | None,
    window_factor: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Sum over kept rows of -sum a log a_hat and of -sum a log a, for one query chunk."""
    teacher = softmax_attention_weights(q, k, causal, q_offset, key_mask)
    if query_mask is not None:  # padded query rows count for nothing
        teacher = teacher * query_mask[:, None, :, None]
    # masked entries have teacher weight 0; the clamps keep 0 * log(0) out of the sum
    if window is not None:
        student = window_attention_weights(q, k, fq, fk, window, window_factor, q_offset, key_mask, eps)
        log_student = torch.log(student.clamp_min(1e-30))
    else:
        scores = upcast(fq) @ upcast(fk).transpose(-1, -2)
        visible = _visible(q.shape[-2], k.shape[-2], causal, q_offset, key_mask, q.device)
        if visible is not None:
            scores = scores.masked_fill(~visible, 0.0)
        log_student = torch.log((scores + eps).clamp_min(1e-30)) - torch.log(
            scores.sum(-1, keepdim=True) + eps
        )
    xent = -(teacher * log_student).sum()
    entropy = -(teacher * torch.log(teacher.clamp_min(1e-30))).sum()
    return xent, entropy


def _check_key_padding_mask(mask: Tensor, q: Tensor) -> Tensor:
    if mask.dtype != torch.bool or mask.shape != (q.shape[0], q.shape[-2]):
        raise ValueError(
            f"key_padding_mask must be a bool (batch, tokens) = {(q.shape[0], q.shape[-2])} tensor, True for "
            f"real tokens; got {mask.dtype} {tuple(mask.shape)} (convert a 0/1 attention mask with .bool())"
        )
    if not bool(mask.any()):
        raise ValueError("key_padding_mask marks every token as padding: there is nothing to distil")
    return mask.to(q.device)


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
    key_padding_mask: Tensor | None = None,
    window: int | None = None,
    window_factor: Tensor | None = None,
) -> Tensor:
    """Distillation loss of one attention layer, averaged over (batch, head, real query row).

    q, k: the teacher's queries and keys (B, H, T, D); fq, fk: the student's features of
    them (B, H, T, F); v: values, needed only for ``loss="mse"``. key_padding_mask: (B, T)
    bool, True for real tokens (self-attention: the same mask marks the padded query rows);
    the result equals the mean over sequences, each unpadded, weighted by its real rows.
    window, window_factor: the student is the causal sliding-window hybrid with this window and
    these per-head factors gamma_h (H,), e.g. ``SlidingWindowLinearAttention.window_factors()``.
    """
    if loss not in LOSSES:
        raise ValueError(f"unknown distillation loss {loss!r}; choose one of {LOSSES}")
    if (window is None) != (window_factor is None):
        raise ValueError("the sliding-window student needs both window= and window_factor=, or neither")
    if window is not None and not causal:
        raise ValueError("the sliding-window hybrid is causal only; distil it with causal=True")
    if q.shape != k.shape or q.dim() != 4:
        raise ValueError(
            f"q and k must both be (batch, heads, tokens, dim), got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if fq.shape[:3] != q.shape[:3] or fk.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"features {tuple(fq.shape)} and {tuple(fk.shape)} do not match q, k {tuple(q.shape)}"
        )
    mask = None if key_padding_mask is None else _check_key_padding_mask(key_padding_mask, q)
    q, k = q.detach(), k.detach()  # the teacher's; the student trains through fq, fk (and window_factor)
    if loss == "mse":
        if v is None:
            raise ValueError("loss='mse' matches attention outputs and needs the values v")
        if mask is not None:
            fk = fk * mask[:, None, :, None].to(fk.dtype)  # padded keys: zero features, no weight
        with torch.no_grad():
            visible = _visible(q.shape[-2], k.shape[-2], causal, 0, mask, q.device)
            target = F.scaled_dot_product_attention(
                upcast(q), upcast(k), upcast(v), attn_mask=visible, is_causal=causal and visible is None
            )
        if window is not None:
            student, _ = chunked_window_attention(
                q, k, upcast(v), fq, fk, window, window_factor, query_chunk, eps, key_padding_mask=mask
            )
        elif causal:
            student, _ = chunked_linear_attention(fq, fk, upcast(v), chunk_size=query_chunk, eps=eps)
        else:
            student = noncausal_linear_attention(fq, fk, upcast(v), eps=eps)
        if mask is None:
            return F.mse_loss(upcast(student), target)
        rows = mask[:, None, :, None].expand_as(target)
        return (upcast(student) - target.nan_to_num(0.0))[rows].pow(2).mean()

    total_xent = fq.new_zeros((), dtype=torch.float32)
    total_entropy = fq.new_zeros((), dtype=torch.float32)
    t = q.shape[-2]
    trained = (fq, fk) if window_factor is None else (fq, fk, window_factor)
    for start in range(0, t, query_chunk):
        end = min(start + query_chunk, t)
        query_mask = None if mask is None else mask[:, start:end]
        args = (q[..., start:end, :], k, fq[..., start:end, :], fk, causal, start, eps, mask, query_mask)
        args = (*args, window, window_factor)
        if torch.is_grad_enabled() and any(x.requires_grad for x in trained):
            xent, entropy = checkpoint(_chunk_xent, *args, use_reentrant=False)
        else:
            xent, entropy = _chunk_xent(*args)
        total_xent = total_xent + xent
        total_entropy = total_entropy + entropy.detach()
    rows = q.shape[1] * (q.shape[0] * t if mask is None else int(mask.sum()))
    if loss == "kl":
        return (total_xent - total_entropy) / rows
    return total_xent / rows
