"""Greedy decoding of a converted causal model, one token per replay of a recorded CUDA graph.

A Hedgehog decode step does little arithmetic per token (per layer: the features of one query and key,
a rank-one update of the state S, z and its read-out) but launches a few hundred small kernels, so at
small batch the step waits on the host (GPT-2 125M, batch 8, on the H200: 2.7 ms of kernels in a 16-22
ms step; ``experiments/efficiency/lab/decode_profile_h200.log``). ``GreedyDecoder`` records the whole
step once as a CUDA graph, the model's forward through its ``LinearAttentionCache``, the greedy token,
the state written back in place and the position advanced, and then replays it: one launch per token,
no host work between tokens.

What a recording fixes, so what the decoder requires: every layer holds a fixed-size
``LinearAttentionState`` (linear attention; not the sliding-window hybrid, H3, Hyena or softmax layers,
whose state changes shape or is kept elsewhere); no feature map depends on the token's position (the
position is a Python number baked into the recording: cosFormer is refused); the batch, the model and
its weights stay as they were recorded; greedy decoding without padding. Where CUDA graphs do not apply
(the CPU, or ``cuda_graph=False``) the same step runs eagerly, which is what the CPU tests check the
bookkeeping with; on the GPU the replay is checked against it (``tests/test_decode_graph.py``).

    model, cache, first = ...  # prefill: model(input_ids=prompt, past_key_values=cache, use_cache=True)
    decoder = GreedyDecoder(model, cache, first, max_new_tokens=256)
    tokens = decoder.run(256)  # (B, 256), the cache then holds the state after them
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hedgehog.attention import LinearAttention, LinearAttentionState
from hedgehog.models.cache import LinearAttentionCache


class GreedyDecoder:
    """Greedy tokens from a prefilled ``LinearAttentionCache``, each step replayed from a CUDA graph.

    ``next_ids`` (B, 1): the token to feed first (the prefill's greedy token). ``max_new_tokens``: the
    size of the token buffer (``run`` may be called several times until it is full). ``cuda_graph``:
    None records a graph when the model is on CUDA; False always runs eagerly. ``warmup``: eager steps
    run (and undone) before recording, which compile the kernels and settle the allocator.
    """

    def __init__(
        self,
        model: nn.Module,
        cache: LinearAttentionCache,
        next_ids: Tensor,
        max_new_tokens: int,
        cuda_graph: bool | None = None,
        warmup: int = 2,
    ) -> None:
        if not isinstance(cache, LinearAttentionCache):
            raise TypeError(f"GreedyDecoder decodes from a LinearAttentionCache, got {type(cache).__name__}")
        for index, converted in sorted(cache.attentions.items()):
            attention = converted.attention
            if not isinstance(attention, LinearAttention):
                raise ValueError(
                    f"layer {index} holds {type(attention).__name__}; GreedyDecoder records layers with a "
                    "fixed-size linear-attention state only (decode other models with model.generate)"
                )
            if getattr(attention.feature_map, "uses_position", False):
                raise ValueError(
                    f"layer {index}'s feature map {type(attention.feature_map).__name__} depends on the "
                    "token's position, which a recorded step would freeze; decode it with model.generate"
                )
        if any(not isinstance(layer.state, LinearAttentionState) for layer in cache.layers):
            raise ValueError("the cache holds no state yet: prefill it (one forward with the prompt) first")
        if next_ids.dim() != 2 or next_ids.shape[1] != 1:
            raise ValueError(f"next_ids must be (batch, 1), got shape {tuple(next_ids.shape)}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.model, self.cache = model, cache
        self.start = cache.get_seq_length()
        device = next_ids.device
        self.ids = next_ids.clone()
        self.position = torch.full_like(self.ids, self.start)
        self.step = torch.zeros_like(self.ids)
        self.tokens = torch.zeros(self.ids.shape[0], max_new_tokens, dtype=torch.long, device=device)
        self.done = 0
        # the state's home for the decoder's life: every step writes its new state back into these
        self.states = [layer.state for layer in cache.layers]
        self.graph: torch.cuda.CUDAGraph | None = None
        if cuda_graph is None:
            cuda_graph = device.type == "cuda"
        if cuda_graph:
            if device.type != "cuda":
                raise ValueError(f"cuda_graph=True needs the model on CUDA, got tokens on {device}")
            self._record(warmup)

    @torch.no_grad()
    def _step(self) -> None:
        logits = self.model(
            input_ids=self.ids, position_ids=self.position, past_key_values=self.cache, use_cache=True
        ).logits
        token = logits[:, -1:].argmax(-1)
        for layer, home in zip(self.cache.layers, self.states, strict=True):
            new = layer.state
            home.kv.copy_(new.kv)
            home.k_sum.copy_(new.k_sum)
            layer.state = LinearAttentionState(home.kv, home.k_sum, new.offset)
        self.tokens.scatter_(1, self.step, token)
        self.ids.copy_(token)
        self.position.add_(1)
        self.step.add_(1)

    def _settle(self, seen: int) -> None:
        """The Python-side counts (tokens seen, state offsets) after ``seen`` tokens in all."""
        for layer, home in zip(self.cache.layers, self.states, strict=True):
            layer.seen = seen
            layer.state = LinearAttentionState(home.kv, home.k_sum, seen)

    def _record(self, warmup: int) -> None:
        saved = [(home.kv.clone(), home.k_sum.clone()) for home in self.states]
        ids = self.ids.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()
        # recording runs no kernel, the warm-up steps did: undo them
        for home, (kv, k_sum) in zip(self.states, saved, strict=True):
            home.kv.copy_(kv)
            home.k_sum.copy_(k_sum)
        self.ids.copy_(ids)
        self.position.fill_(self.start)
        self.step.zero_()
        self.tokens.zero_()
        self._settle(self.start)

    def run(self, new_tokens: int) -> Tensor:
        """Decode ``new_tokens`` more greedy tokens; returns all decoded so far (B, tokens)."""
        if self.done + new_tokens > self.tokens.shape[1]:
            raise ValueError(
                f"{self.done} tokens decoded and {new_tokens} more asked, but the decoder was made for "
                f"max_new_tokens={self.tokens.shape[1]}; make a new one with a larger buffer"
            )
        for _ in range(new_tokens):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
        self.done += new_tokens
        if self.graph is not None:
            self._settle(self.start + self.done)
        return self.tokens[:, : self.done]
