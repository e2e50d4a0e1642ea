"""A small pre-LN decoder-only Transformer whose attention comes from config.

Used for the experiments trained from scratch (associative recall, the small language
models); pretrained Hugging Face models are converted instead (``hedgehog.models.conversion``).
Its ``Block`` is also the layer of the bidirectional encoder (``hedgehog.models.classifier``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hedgehog.attention import build_attention


class Block(nn.Module):
    """LayerNorm -> attention -> residual, LayerNorm -> MLP -> residual.

    ``causal``: each token attends to itself and earlier tokens (a decoder), or to every token (an
    encoder); ``key_padding_mask`` (B, T), True for real tokens, keeps padded keys out of attention.
    The block is layer ``layer_index`` of ``num_layers`` (handed to an attention constructor that names
    them, as Hybrid H3's).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        attention: Callable[..., nn.Module],
        mlp_ratio: int,
        dropout: float,
        layer_index: int = 0,
        num_layers: int = 1,
        causal: bool = True,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of num_heads={num_heads}")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.ln_attn = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attn = build_attention(
            attention,
            num_heads=num_heads,
            head_dim=self.head_dim,
            causal=causal,
            layer_index=layer_index,
            num_layers=num_layers,
        )
        self.out = nn.Linear(d_model, d_model)
        if mlp_ratio < 0:
            raise ValueError(f"mlp_ratio={mlp_ratio} must be >= 0 (0: no MLP, attention-only blocks)")
        # mlp_ratio 0: attention-only blocks (zoology's MQAR models have no MLP, so the only place a
        # lookup can happen is in context)
        self.ln_mlp = nn.LayerNorm(d_model) if mlp_ratio else None
        self.mlp = (
            nn.Sequential(
                nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model)
            )
            if mlp_ratio
            else None
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, cache: Any = None, key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        b, t, _ = x.shape
        q, k, v = (
            self.qkv(self.ln_attn(x)).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )
        y, cache = self.attn(q, k, v, cache=cache, key_padding_mask=key_padding_mask)
        x = x + self.dropout(self.out(y.transpose(1, 2).reshape(b, t, -1)))
        if self.mlp is None:
            return x, cache
        return x + self.dropout(self.mlp(self.ln_mlp(x))), cache


def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """N(0, std^2) for every ``nn.Linear`` and ``nn.Embedding`` weight in ``model``, zero biases (GPT-2's
    initialisation at 0.02); other parameters (Hedgehog's W and b) keep their own."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class TransformerLM(nn.Module):
    """Token + learned position embeddings, ``num_layers`` blocks, an output head.

    ``tie_head`` shares the head's weight with the token embedding. ``init_std`` draws the weight of
    every ``nn.Linear`` and ``nn.Embedding`` (those inside attention modules too) from N(0, init_std^2),
    with zero biases (GPT-2's 0.02); ``None`` keeps PyTorch's default initialisation (embeddings
    N(0, 1), linear layers uniform with bound 1/sqrt(fan_in)). Other parameters (Hedgehog's W and b)
    keep their own initialisation either way. The defaults, PyTorch's init and an untied head, are what
    trains associative recall from scratch at learning rates up to 1e-2; GPT-2's 0.02 with a tied head
    left softmax attention at chance above 1e-3 (experiments/associative_recall/README.md, the ablation).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        max_len: int,
        attention: Callable[..., nn.Module],
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        tie_head: bool = False,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, attention, mlp_ratio, dropout, i, num_layers) for i in range(num_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_head:
            self.head.weight = self.embed.weight
        if init_std is not None:
            init_weights(self, init_std)

    # the forward takes ``select``: the task then computes the head only where labels are (AR's queries)
    selects_positions = True

    def forward(
        self, input_ids: Tensor, caches: Sequence[Any] | None = None, select: Tensor | None = None
    ) -> tuple[Tensor, list[Any]]:
        """Logits (B, T, vocab) and per-layer caches; pass the caches back to continue decoding.

        ``select`` (B, T) bool: the logits of those positions only, (N, vocab) in row-major order; the
        head is the costly part at a large vocabulary when few positions are scored (MQAR: 4 of 64 tokens,
        vocabulary 8,192)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
        offset = caches[0].offset if caches else 0
        t = input_ids.shape[1]
        if offset + t > self.max_len:
            raise ValueError(
                f"sequence reaches position {offset + t} but the model has max_len={self.max_len}; "
                "raise model.max_len"
            )
        positions = torch.arange(offset, offset + t, device=input_ids.device)
        x = self.embed(input_ids) + self.pos(positions)
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, caches[i] if caches else None)
            new_caches.append(cache)
        if select is not None:
            x = x[select]
        return self.head(self.ln_f(x)), new_caches
