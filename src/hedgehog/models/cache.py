"""The generation cache of converted models whose layers decode from their own state, not from past keys.

A causal model whose converted layers decode from the state their attention returns
(``ConvertedAttention.decodes_from_state``) generates with ``LinearAttentionCache(model)``, which keeps
per layer that state, never the keys transformers would cache:

- linear attention: the fixed-size ``LinearAttentionState`` (S, z and the tokens seen); the
  sliding-window hybrid: ``WindowAttentionState`` (the same plus its last window - 1 keys and values);
  H3: ``H3State`` (the shift SSM's last keys and the diagonal SSM's state). For these, time and
  memory per generated token do not grow with the context;
- Hyena: ``HyenaState``, whose long-convolution inputs grow with the context (one vector per token
  and layer, like a key cache of half the size) and whose next token costs O(T): Hyena has no
  recurrence of fixed size (``hedgehog.mixers.hyena``); ``nbytes`` reports the growth;
- softmax layers of a mixed model (Hybrid H3's): ``MaskedKVCache``, their keys, values and padding
  mask, growing like transformers' key cache.

A model whose layers are all softmax keeps transformers' own key cache. ``generate`` of a converted
model brings this cache by itself (``convert``); to pass it explicitly (``cache=`` is the name in
transformers 5.24 and later; earlier releases take only ``past_key_values=`` and silently ignore
``cache=``, which then decodes without any past: found on the GPU machine's 5.17)::

    out = model.generate(input_ids, attention_mask=mask, cache=LinearAttentionCache(model))
    out = model(input_ids, cache=cache, use_cache=True)  # prefill, then one or more tokens a call

transformers builds its default ``DynamicCache`` from ``config.layer_types``, which config
validation limits to its own layer types, so a converted model cannot make it the default
without patching transformers; a layer that decodes from its state handed past keys by a
``DynamicCache`` raises and names this cache. Padding (left or right) works: padded keys never enter
the state (H3 and Hyena: for left and right padding; ``hedgehog.mixers``).
"""

from __future__ import annotations

from torch import Tensor
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin

from hedgehog.attention import LinearAttentionState, WindowAttentionState
from hedgehog.mixers import H3State, HyenaState
from hedgehog.models.conversion import CHILD, ConvertedAttention, MaskedKVCache, attention_modules

State = LinearAttentionState | WindowAttentionState | H3State | HyenaState | MaskedKVCache


class LinearStateLayer(CacheLayerMixin):
    """One layer of ``LinearAttentionCache``: its converted attention's state and the tokens seen.

    Transformers' key-cache slots stay empty: a softmax layer's keys live in its ``MaskedKVCache`` state.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False
    supports_early_init = False

    def __init__(self) -> None:
        super().__init__()
        self.state: State | None = None
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
        """Apply ``fn`` to every tensor field of the state with the batch first; keep the rest (the
        fields a state names in ``shared_fields``, as Hyena's filter, hold no rows)."""
        if self.state is not None:
            shared = getattr(type(self.state), "shared_fields", ())
            fields = zip(self.state._fields, self.state, strict=True)
            self.state = type(self.state)(
                *(fn(f) if isinstance(f, Tensor) and name not in shared else f for name, f in fields)
            )

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep these rows of the batch (beam search reorders with it too: each row's state is its own)."""
        if self.state is not None:
            device = next(f for f in self.state if isinstance(f, Tensor)).device
            indices = indices.to(device)
            self._map_rows(lambda t: t[indices])

    def reorder_cache(self, beam_idx: Tensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_rows(lambda t: t.repeat_interleave(repeats, dim=0))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError(
            "a recurrent state cannot forget tokens once folded in, so LinearAttentionCache cannot be "
            "cropped (assisted or speculative decoding needs that); generate without an assistant model"
        )


class LinearAttentionCache(Cache):
    """The generation cache of a converted causal model with layers that decode from their own state.

    Per layer it keeps the state the layer's attention returns: ``LinearAttentionState`` (S (B, H, F, Dv)
    and z (B, H, F) in float32, tokens seen), the sliding-window hybrid's ``WindowAttentionState`` (plus
    its last window - 1 keys, features, values and key mask), ``H3State`` (fixed size: memory is fixed
    and each new token costs O(1) for all of these), ``HyenaState`` (growing: O(T) per token), or for a
    softmax layer among them ``MaskedKVCache`` (growing). Pass it as
    ``model.generate(..., cache=LinearAttentionCache(model))`` or to the forward; one cache serves one
    sequence batch. Beam search works (states are reordered by row); cropping (assisted decoding) raises.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        attentions: dict[int, ConvertedAttention] = {}
        for name, module in attention_modules(model):
            converted = getattr(module, CHILD, None)
            if converted is None:
                raise ValueError("model is not converted; call convert(model, attention) first")
            if not converted.causal:
                raise ValueError(
                    f"LinearAttentionCache decodes causal models, but {name} holds non-causal "
                    f"{type(converted.attention).__name__} (an encoder does not generate)"
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
        if not any(converted.decodes_from_state for converted in attentions.values()):
            raise ValueError(
                "LinearAttentionCache needs causal layers that decode from their own state (linear, "
                "sliding-window hybrid, H3, Hyena) but every converted layer is SoftmaxAttention; softmax "
                "conversions use transformers' default key cache (leave cache unset)"
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
        """Bytes held by the states, every tensor field: the same after 10,000 tokens as after a window's
        for linear, hybrid and H3 layers; growing with the tokens for Hyena and softmax layers."""
        return sum(
            t.numel() * t.element_size()
            for layer in self.layers
            if layer.state is not None
            for t in layer.state
            if isinstance(t, Tensor)
        )
