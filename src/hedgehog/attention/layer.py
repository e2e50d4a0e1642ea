"""Attention modules with one call signature, so models never know which attention they hold.

All take projected q, k, v laid out (batch, heads, tokens, head_dim) and return the output
(same layout) and a cache for the next call: a KV cache for softmax, the fixed-size
recurrent state for linear attention and for the sliding-window hybrid. Models build them from config as
``attention(num_heads=..., head_dim=..., causal=...)`` (a Hydra partial), through ``build_attention``,
which also hands a constructor that asks for them the layer's index and the number of layers.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hedgehog.attention.feature_maps import FeatureMap, HedgehogFeatureMap
from hedgehog.attention.linear_attention import (
    DEFAULT_EPS,
    LinearAttentionState,
    causal_mask,
    chunked_linear_attention,
    kernel_linear_attention,
    noncausal_linear_attention,
    quadratic_linear_attention,
    recurrent_linear_attention,
    upcast,
)
from hedgehog.attention.window import (
    WindowAttentionState,
    chunked_window_attention,
    quadratic_window_attention,
    recurrent_window_attention,
    window_attention_state,
    window_state_after,
)

CAUSAL_FORMS = ("chunked", "quadratic", "recurrent")


def check_qkv(q: Tensor, k: Tensor, v: Tensor, check_finite: bool = True) -> None:
    """Raise a clear error for a wrong layout, mismatched shapes or non-finite values.

    On CUDA the finiteness check must not stop the host every layer: it is a device-side assert
    (``torch._assert_async``) that fails at a later kernel launch and ends the process, as a
    diverged run should end; on other devices it raises ``FloatingPointError`` at once.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(
                f"{name} must be laid out (batch, heads, tokens, head_dim), got shape "
                f"{tuple(x.shape)}; reshape projections with .view(B, T, H, D).transpose(1, 2)"
            )
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            "q, k, v must share batch and heads, k and v the tokens, q and k the head dim; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if check_finite:
        for name, x in (("q", q), ("k", k), ("v", v)):
            finite = torch.isfinite(x).all()
            message = (
                f"attention input {name} holds NaN or inf; the layer before attention "
                "diverged (lower the learning rate or check the input data)"
            )
            if x.is_cuda:
                torch._assert_async(finite, message)
            elif not finite:
                raise FloatingPointError(message)


def build_attention(
    attention: Callable[..., nn.Module],
    num_heads: int,
    head_dim: int,
    causal: bool,
    layer_index: int,
    num_layers: int,
) -> nn.Module:
    """``attention(num_heads=, head_dim=, causal=)`` for layer ``layer_index`` of ``num_layers``.

    A constructor whose signature names ``layer_index`` or ``num_layers`` receives them (a choice per
    layer, as Hybrid H3's softmax layers among H3 layers, ``hedgehog.mixers.hybrid_h3``); every other
    attention is built exactly as before, the same in every layer.
    """
    names = inspect.signature(attention).parameters
    per_layer = {"layer_index": layer_index, "num_layers": num_layers}
    extra = {name: value for name, value in per_layer.items() if name in names}
    return attention(num_heads=num_heads, head_dim=head_dim, causal=causal, **extra)


class KVCache(NamedTuple):
    """Keys and values seen so far (B, H, T, D): what softmax attention must keep."""

    k: Tensor
    v: Tensor

    @property
    def offset(self) -> int:
        return self.k.shape[-2]


class SoftmaxAttention(nn.Module):
    """Exact softmax attention through scaled_dot_product_attention (FlashAttention on GPU)."""

    def __init__(self, num_heads: int, head_dim: int, causal: bool = True, check_finite: bool = True) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.causal = num_heads, head_dim, causal
        self.check_finite = check_finite

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cache: KVCache | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, KVCache]:
        check_qkv(q, k, v, self.check_finite)
        if cache is not None:
            k, v = torch.cat([cache.k, k], dim=-2), torch.cat([cache.v, v], dim=-2)
        mask = None
        if key_padding_mask is not None:
            mask = key_padding_mask.bool()[:, None, None, :]
        if self.causal and (cache is not None or mask is not None):
            causal = causal_mask(q.shape[-2], k.shape[-2], q.device)
            mask = causal if mask is None else mask & causal
        is_causal = self.causal and mask is None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return out, KVCache(k, v)


class LinearAttention(nn.Module):
    """Linear attention with a feature map: y = phi(q) S / (phi(q) z + eps).

    ``causal_form`` selects the causal algorithm (all compute the same function): ``chunked``
    for training and prefill, ``recurrent`` token by token, ``quadratic`` materialised.
    Non-causal attention has the feature form, and for a map with a closed-form kernel (Taylor-2)
    over fewer keys than its feature dim, the kernel form (the same function, without the features).
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        feature_map: Callable[..., FeatureMap],
        causal: bool = True,
        causal_form: str = "chunked",
        chunk_size: int = 64,
        eps: float = DEFAULT_EPS,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if causal_form not in CAUSAL_FORMS:
            raise ValueError(f"causal_form must be one of {CAUSAL_FORMS}, got {causal_form!r}")
        self.num_heads, self.head_dim, self.causal = num_heads, head_dim, causal
        self.feature_map = feature_map(num_heads=num_heads, head_dim=head_dim)
        self.causal_form, self.chunk_size, self.eps = causal_form, chunk_size, eps
        self.check_finite = check_finite

    def features(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        """phi_q(q), phi_k(k): what distillation trains and the kernels consume."""
        return self.feature_map(q, k, offset)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cache: LinearAttentionState | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, LinearAttentionState | None]:
        check_qkv(q, k, v, self.check_finite)
        if q.is_cuda:
            fused = self._kernel_forward(q, k, v, cache, key_padding_mask)
            if fused is not None:
                return fused
        if not self.causal and k.shape[-2] < self.feature_map.feature_dim:
            # short sequences, wide features (Taylor-2: 1 + d + d^2): the closed-form kernel, if the map has one
            scores = self.feature_map.kernel(q, k)
            if scores is not None:
                if key_padding_mask is not None:
                    scores = scores * key_padding_mask.to(scores.dtype)[:, None, None, :]
                return kernel_linear_attention(scores, v, self.eps), None
        fq, fk = self.features(q, k, cache.offset if cache is not None else 0)
        if key_padding_mask is not None:
            fk = fk * key_padding_mask.to(fk.dtype)[:, None, :, None]
        if not self.causal:
            return noncausal_linear_attention(fq, fk, v, self.eps), None
        if self.causal_form == "recurrent" or (cache is not None and q.shape[-2] == 1):
            return recurrent_linear_attention(fq, fk, v, self.eps, cache)
        if self.causal_form == "quadratic" and cache is None:
            out = quadratic_linear_attention(fq, fk, v, causal=True, eps=self.eps)
            kv = upcast(fk).transpose(-1, -2) @ upcast(v)
            return out, LinearAttentionState(kv, upcast(fk).sum(-2), q.shape[-2])
        return chunked_linear_attention(fq, fk, v, self.chunk_size, self.eps, cache)

    def _kernel_forward(
        self, q: Tensor, k: Tensor, v: Tensor, cache: LinearAttentionState | None, mask: Tensor | None
    ) -> tuple[Tensor, LinearAttentionState | None] | None:
        """The same function through the Triton kernels (half precision on CUDA), else None.

        Hedgehog maps run fused (features computed inside the kernel), except causal ones above head dim
        64 (Llama-family), whose features the map kernels write once for the generic chunked kernels:
        0.53x the fused kernels' time at Llama-2's shape, 2k-32k, for about 1 GB more peak memory per call
        (``experiments/efficiency/tables/h200/results_h200.md``, `mapped`). Other maps compute their
        features here and share the chunked and decode kernels. A carried state is a constant.
        """
        if q.dtype not in (torch.float16, torch.bfloat16) or q.shape[:3] != k.shape[:3]:
            return None
        from hedgehog import kernels  # triton is optional; imported only when a kernel runs

        fmap = self.feature_map
        if not kernels.supported(q.shape[-1], fmap.feature_dim, v.shape[-1]):
            return None
        if cache is not None and cache.kv.requires_grad and torch.is_grad_enabled():
            return None
        offset = cache.offset if cache is not None else 0
        state = None if cache is None or not self.causal else (cache.kv, cache.k_sum)
        decoding = state is not None and q.shape[-2] == 1 and self.causal and not torch.is_grad_enabled()
        hedgehog = isinstance(fmap, HedgehogFeatureMap) and (
            decoding or not self.causal or max(q.shape[-1], fmap.weight_q.shape[-1]) <= 64
        )
        if hedgehog:
            params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
            options = {"activation": fmap.activation, "temperature": fmap.temperature, "eps": self.eps}
        else:
            fq, fk = self.features(q, k, offset)
            if mask is not None:
                fk = fk * mask.to(fk.dtype)[:, None, :, None]
        # the decode kernels take no key mask (Hedgehog's features are computed inside): masked tokens go below
        if decoding and (mask is None or not hedgehog):
            if hedgehog:
                out, new = kernels.hedgehog_decode(q, k, v, *params, state, **options)
            else:
                out, new = kernels.linear_attention_decode(fq, fk, v, state, self.eps)
        elif hedgehog:
            out, new = kernels.hedgehog_attention(
                q, k, v, *params, causal=self.causal, state=state, key_padding_mask=mask, **options
            )
        else:
            out, new = kernels.linear_attention(fq, fk, v, causal=self.causal, eps=self.eps, state=state)
        return out, None if new is None else LinearAttentionState(new[0], new[1], offset + q.shape[-2])


class SlidingWindowLinearAttention(nn.Module):
    """LoLCATs' hybrid: softmax over the last ``window`` keys plus linear attention over the keys before them.

    One normaliser over both parts (``hedgehog.attention.window``); the softmax part is weighted per
    head by gamma_h = sigmoid(``window_factor_logit``), which starts at ``window_factor`` (LoLCATs:
    0.1) and trains with the feature map in stage 1. Causal only (the hybrid serves decoder LLMs).
    ``causal_form`` as for ``LinearAttention``; the cache is a ``WindowAttentionState``: (S, z) plus
    the last window - 1 keys and values, fixed in size. On CUDA in half precision, a sequence from its start
    (no cache, window 64, padded or not) runs through the hybrid's kernels (``kernels.window_attention``).
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        feature_map: Callable[..., FeatureMap],
        causal: bool = True,
        window: int = 64,
        window_factor: float = 0.1,
        causal_form: str = "chunked",
        chunk_size: int = 64,
        eps: float = DEFAULT_EPS,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if not causal:
            raise ValueError(
                "SlidingWindowLinearAttention is causal only (a window of past keys); for an encoder "
                "use LinearAttention (attention=hedgehog)"
            )
        if causal_form not in CAUSAL_FORMS:
            raise ValueError(f"causal_form must be one of {CAUSAL_FORMS}, got {causal_form!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive number of keys, got {window!r}")
        if not 0.0 < window_factor < 1.0:
            raise ValueError(
                f"window_factor is the initial sigmoid(theta_h), strictly between 0 and 1; got {window_factor}"
            )
        self.num_heads, self.head_dim, self.causal = num_heads, head_dim, causal
        self.feature_map = feature_map(num_heads=num_heads, head_dim=head_dim)
        logit = math.log(window_factor / (1.0 - window_factor))
        self.window_factor_logit = nn.Parameter(torch.full((num_heads,), logit))
        self.window, self.causal_form, self.chunk_size, self.eps = window, causal_form, chunk_size, eps
        self.check_finite = check_finite

    def window_factors(self) -> Tensor:
        """gamma_h = sigmoid(theta_h), (num_heads,) in float32: the weight of the softmax part per head."""
        return torch.sigmoid(upcast(self.window_factor_logit))

    def features(self, q: Tensor, k: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
        """phi_q(q), phi_k(k) of the linear part: what distillation trains."""
        return self.feature_map(q, k, offset)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cache: WindowAttentionState | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, WindowAttentionState]:
        check_qkv(q, k, v, self.check_finite)
        if cache is not None and not isinstance(cache, WindowAttentionState):
            raise TypeError(
                f"SlidingWindowLinearAttention continues from a WindowAttentionState, got {type(cache).__name__}"
            )
        fq, fk = self.features(q, k, cache.offset if cache is not None else 0)
        if q.is_cuda and cache is None and self.causal_form == "chunked":
            fused = self._kernel_forward(q, k, v, fq, fk, key_padding_mask)
            if fused is not None:
                return fused
        args = (q, k, v, fq, fk, self.window, self.window_factors())
        if self.causal_form == "recurrent" or (cache is not None and q.shape[-2] == 1):
            return recurrent_window_attention(*args, self.eps, key_padding_mask, cache)
        if self.causal_form == "quadratic" and cache is None:
            out = quadratic_window_attention(*args, self.eps, key_padding_mask)
            return out, window_attention_state(k, fk, v, self.window, key_padding_mask)
        return chunked_window_attention(*args, self.chunk_size, self.eps, key_padding_mask, cache)

    def _kernel_forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        fq: Tensor,
        fk: Tensor,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, WindowAttentionState] | None:
        """A sequence from its start through the hybrid's Triton kernels (half precision on CUDA, a window
        of 64, sizes the kernels take), else None. Padded keys (``key_padding_mask`` False) leave the window
        and the linear part in the kernels. The returned state, for continuing, is a constant."""
        if q.dtype not in (torch.float16, torch.bfloat16) or self.window != 64 or q.shape[:3] != k.shape[:3]:
            return None
        from hedgehog import kernels  # triton is optional; imported only when a kernel runs

        if not kernels.supported(q.shape[-1], fq.shape[-1], v.shape[-1]):
            return None
        fq, fk, v = (x.to(q.dtype) for x in (fq, fk, v))
        out, (kv, k_sum) = kernels.window_attention(
            q, k, v, fq, fk, self.window_factors(), self.window, self.eps, key_padding_mask=key_padding_mask
        )
        with torch.no_grad():  # the state from the kernels' own linear state: no second pass over the keys
            return out, window_state_after(kv, k_sum, k, fk, v, self.window, key_padding_mask)
