"""The generation cache of converted linear-attention models: the fixed-size state per layer, no key cache.

A causal model whose converted layers are all linear (or sliding-window hybrids) decodes with
``LinearAttentionCache(model)``: per layer it keeps the fixed-size ``LinearAttentionState`` (S, z and
the tokens seen), or the hybrid's ``WindowAttentionState`` (the same plus its last window - 1 keys and
values), never the whole context's keys, so time and memory per generated token do not grow with it. Pass it explicitly
(``cache=`` is the name in transformers 5.24 and later; earlier releases take only
``past_key_values=`` and silently ignore ``cache=``, which then decodes without any past: found on
the GPU machine's 5.17)::

    out = model.generate(input_ids, attention_mask=mask, cache=LinearAttentionCache(model))
    out = model(input_ids, cache=cache, use_cache=True)  # prefill, then one or more tokens a call

transformers builds its default ``DynamicCache`` from ``config.layer_types``, which config
validation limits to its own layer types, so a converted model cannot make it the default
without patching transformers; a linear layer handed past keys by a ``DynamicCache`` raises
and names this cache. Padding (left or right) works: padded keys never enter the state.
"""

from __future__ import annotations

from torch import Tensor
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin

from hedgehog.attention import LinearAttentionState, WindowAttentionState
from hedgehog.models.conversion import CHILD, ConvertedAttention, attention_modules


class LinearStateLayer(CacheLayerMixin):
    """One layer of ``LinearAttentionCache``: its converted attention's state and the tokens seen, no key cache."""

    is_sliding = False
    is_compileable = False
    is_croppable = False
    supports_early_init = False

    def __init__(self) -> None:
        super().__init__()
        self.state: LinearAttentionState | WindowAttentionState | None = None
        self.seen = 0

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """Count the new tokens and hand them back unkept: the attention folds them into the state."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.seen += key_states.shape[-2]
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset): the mask covers this call's keys only; earlier keys live in the state."""
        return query_length, self.seen

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.state, self.seen = None, 0

    def _map_rows(self, fn) -> None:
        """Apply ``fn`` to every tensor field of the state (each has the batch first), keep the rest."""
        if self.state is not None:
            self.state = type(self.state)(*(fn(f) if isinstance(f, Tensor) else f for f in self.state))

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep these rows of the batch (beam search reorders with it too: each row's state is its own)."""
        if self.state is not None:
            indices = indices.to(self.state.kv.device)
            self._map_rows(lambda t: t[indices])

    def reorder_cache(self, beam_idx: Tensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_rows(lambda t: t.repeat_interleave(repeats, dim=0))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError(
            "a linear-attention state cannot forget tokens once folded in, so LinearAttentionCache cannot be "
            "cropped (assisted or speculative decoding needs that); generate without an assistant model"
        )


class LinearAttentionCache(Cache):
    """The generation cache of a converted causal model whose converted layers are all linear or hybrid.

    Per layer it keeps the ``LinearAttentionState`` (S (B, H, F, Dv) and z (B, H, F) in float32,
    tokens seen), or the hybrid's ``WindowAttentionState`` (plus its last window - 1 keys, features,
    values and key mask), instead of all keys and values: memory is fixed and each new token costs O(1). Pass
    it as ``model.generate(..., cache=LinearAttentionCache(model))`` or to the forward; one cache
    serves one sequence batch. Beam search works (states are reordered by row); cropping
    (assisted decoding) raises.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        attentions: dict[int, ConvertedAttention] = {}
        for name, module in attention_modules(model):
            converted = getattr(module, CHILD, None)
            if converted is None:
                raise ValueError("model is not converted; call convert(model, attention) first")
            if not (converted.is_linear and converted.causal):
                raise ValueError(
                    f"LinearAttentionCache needs causal linear attention in every converted layer (linear or "
                    f"sliding-window hybrid), but {name} "
                    f"holds {'causal' if converted.causal else 'non-causal'} "
                    f"{type(converted.attention).__name__}; softmax conversions use transformers' default "
                    "key cache (leave cache unset)"
                )
            index = getattr(module, "layer_idx", None)
            if index is None or index in attentions:
                raise ValueError(
                    f"{name} has layer_idx {index!r}; the cache needs a distinct layer_idx on every attention module"
                )
            attentions[index] = converted
        if sorted(attentions) != list(range(len(attentions))):
            raise ValueError(
                f"attention layer indices must be 0..{len(attentions) - 1}, got {sorted(attentions)}"
            )
        super().__init__(layers=[LinearStateLayer() for _ in attentions])
        self.attentions = attentions

    def update(
        self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args, **kwargs
    ) -> tuple[Tensor, Tensor]:
        """Count the new tokens and hand the layer's state slot to the converted attention that runs next."""
        layer = self.layers[layer_idx]
        keys, values = layer.update(key_states, value_states)
        self.attentions[layer_idx].pending = layer
        return keys, values

    def nbytes(self) -> int:
        """Bytes held by the states, every tensor field (the same after 10,000 tokens as after a window's)."""
        return sum(
            t.numel() * t.element_size()
            for layer in self.layers
            if layer.state is not None
            for t in layer.state
            if isinstance(t, Tensor)
        )
