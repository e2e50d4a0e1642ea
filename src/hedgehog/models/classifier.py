"""A small bidirectional Transformer that classifies token sequences: the Long Range Arena models.

Trained from scratch with the attention chosen by config (softmax or any linear map, non-causal).
Token + learned position embeddings, ``num_layers`` pre-LN blocks of the decoder's kind
(``hedgehog.models.lm.Block``) with ``causal=False``, a final LayerNorm, the mean over the real
tokens (padding is left out of attention and of the mean), and an MLP head.

With ``pairs`` the model scores two documents (LRA's retrieval task): each is encoded by the same
encoder into x1 and x2, and the head reads [x1, x2, x1 * x2, x1 - x2] (LRA's dual-encoder head).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from hedgehog.models.lm import Block, init_weights


class TransformerClassifier(nn.Module):
    """Encoder + mean pooling over real tokens + MLP head; ``forward`` returns logits (B, num_labels)."""

    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        max_len: int,
        attention: Callable[..., nn.Module],
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        pairs: bool = False,
        init_std: float | None = 0.02,
    ) -> None:
        super().__init__()
        self.vocab_size, self.max_len, self.pairs = vocab_size, max_len, pairs
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, attention, mlp_ratio, dropout, i, num_layers, causal=False)
            for i in range(num_layers)
        )
        self.ln_f = nn.LayerNorm(d_model)
        pooled = 4 * d_model if pairs else d_model
        self.head = nn.Sequential(
            nn.Linear(pooled, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, num_labels)
        )
        if init_std is not None:
            init_weights(self, init_std)

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, d_model): the mean of the final states over the real tokens (``attention_mask`` 1)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
        t = input_ids.shape[1]
        if t > self.max_len:
            raise ValueError(
                f"sequences of {t} tokens exceed the model's max_len={self.max_len}; raise max_len"
            )
        real = (
            torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        )
        if not bool(real.any(-1).all()):
            raise ValueError("every sequence needs at least one real token (attention_mask all 0 in a row)")
        x = self.embed(input_ids) + self.pos(torch.arange(t, device=input_ids.device))
        mask = None if attention_mask is None else real
        for block in self.blocks:
            x, _ = block(x, key_padding_mask=mask)
        weights = real.to(x.dtype).unsqueeze(-1)
        return (self.ln_f(x) * weights).sum(1) / weights.sum(1)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        input_ids_2: Tensor | None = None,
        attention_mask_2: Tensor | None = None,
    ) -> Tensor:
        if self.pairs != (input_ids_2 is not None):
            raise ValueError(
                f"this classifier was built with pairs={self.pairs} but got "
                f"{'a second' if input_ids_2 is not None else 'no second'} document (input_ids_2); set "
                "model.pairs to true for the retrieval task only"
            )
        x1 = self.encode(input_ids, attention_mask)
        if not self.pairs:
            return self.head(x1)
        x2 = self.encode(input_ids_2, attention_mask_2)
        return self.head(torch.cat([x1, x2, x1 * x2, x1 - x2], dim=-1))
