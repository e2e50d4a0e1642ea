"""Conversion of Hugging Face models to the project's attention: the one way to linearise a pretrained model.

How it works. In transformers 5, the attention modules of BERT-family encoders, GPT-2, ViT and
the Llama-layout decoders (``ATTENTION_CLASSES``: Llama, Mistral, Qwen2/3, Gemma 1-3, Phi/Phi-3,
OLMo 1-2, Granite, StarCoder2, StableLM, Cohere, SmolLM3) compute q, k, v with their own
projections (and RoPE, for the decoders), then call the function
registered under ``config._attn_implementation`` as ``f(module, query, key, value, attention_mask,
scaling=..., dropout=...)`` with (batch, heads, tokens, head_dim) tensors, and apply their own
output projection to the result. ``convert``:

- attaches one project attention module (``LinearAttention`` with any feature map, the sliding-window
  hybrid ``SlidingWindowLinearAttention``, ``SoftmaxAttention``, or a sequence mixer of
  ``hedgehog.mixers``: H3, Hyena), wrapped in ``ConvertedAttention``, as the child
  ``converted_attention`` of every self-attention module listed in ``ATTENTION_CLASSES`` for the
  model's type; a constructor that names ``layer_index`` or ``num_layers`` receives them (a per-layer
  choice, as Hybrid H3's softmax layers among H3 layers);
- registers the attention function ``"hedgehog"`` (and its mask function) with transformers and
  switches the model to it, so each attention module calls its own ``converted_attention``.

Nothing else changes: the q/k/v/o projections, embeddings, MLPs and heads keep their pretrained
weights, and feature maps act on the same q and k the softmax saw (after RoPE for Llama).
``revert`` removes the attached modules and restores the previous attention implementation.

What trains in each stage (``set_stage``, the paper's two-stage recipe: distil, then finetune):

- ``distill``: only feature-map parameters train (and the hybrid's per-head window factors: what
  ``feature_map_parameters`` selects); every layer outputs its softmax attention (the teacher), so
  each layer's q and k are exactly the original model's, and records the (q, k, v) it saw for the
  attention-distillation loss (``distillation_losses``, or ``distillation_backward`` a block of
  layers at a time);
- ``finetune``: every parameter trains and every layer outputs its converted attention; with LoRA
  attached (``hedgehog.models.lora.add_lora``) only the adapters train, plus the feature maps if
  ``add_lora`` was asked to train them.

Scores: the model's own scale reaches the converted layer (``scaling=``); where it is not
1/sqrt(head_dim) (Gemma-2/3's query_pre_attn_scalar, Granite's attention_multiplier, GPT-2's
1/(layer + 1)), q is multiplied by scaling * sqrt(head_dim) first, so the softmax teacher, the
distillation loss and the linear attention all see the query whose standard softmax is the
model's. Gemma-2's logit soft-capping is computed by neither and is rejected at conversion.
Sliding windows: converted layers attend to every earlier token, which equals a window of W only
up to W tokens; a layer called with a window shorter than its keys (or its state's tokens) raises.

Masks: padding reaches the converted attention as a boolean (batch, 1, Tq, Tk) mask (or None);
causal masking comes from the module's own ``is_causal``. Attention-weight dropout is not applied
by converted layers (linear attention never forms the weights).

Generation: layers whose attention returns its own state (``ConvertedAttention.decodes_from_state``:
linear attention, the sliding-window hybrid, H3, Hyena; every attention but softmax) continue from it,
through ``LinearAttentionCache`` (``hedgehog.models.cache``), never from past keys. A causal model with
at least one such layer brings that cache to ``generate`` by itself; its softmax layers, if any (Hybrid
H3's), keep their keys, values and padding mask in the same cache (``MaskedKVCache``). Softmax-only
conversions keep transformers' key cache: earlier keys arrive before the new ones and
``SoftmaxAttention`` attends to all of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from types import MethodType
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from hedgehog.attention import (
    KVCache,
    LinearAttention,
    SlidingWindowLinearAttention,
    SoftmaxAttention,
    attention_distillation_loss,
    build_attention,
)

if TYPE_CHECKING:
    from hedgehog.models.cache import LinearStateLayer

ATTN_IMPLEMENTATION = "hedgehog"
CHILD = "converted_attention"
STAGES = ("distill", "finetune")
# What stage 1 trains, by name under each converted attention: the feature maps, and the per-head
# window factors of the sliding-window hybrid (saved and loaded with the feature maps).
DISTILLED = (f"{CHILD}.attention.feature_map.", f"{CHILD}.attention.window_factor_logit")

# Self-attention classes that call transformers' attention interface, by config.model_type.
# Several names per family cover the transformers versions the project runs on.
ATTENTION_CLASSES: dict[str, tuple[str, ...]] = {
    "bert": ("BertSelfAttention",),
    "roberta": ("RobertaSelfAttention",),
    "xlm-roberta": ("XLMRobertaSelfAttention",),
    "electra": ("ElectraSelfAttention",),
    "gpt2": ("GPT2Attention",),
    "vit": ("ViTSelfAttention", "ViTAttention"),
    "llama": ("LlamaAttention",),
    # decoders with Llama's layout: q/k/v/o projections (Phi-3: one fused qkv), RoPE, grouped-query heads
    "mistral": ("MistralAttention",),
    "ministral": ("MinistralAttention",),
    "qwen2": ("Qwen2Attention",),
    "qwen3": ("Qwen3Attention",),
    "gemma": ("GemmaAttention",),
    "gemma2": ("Gemma2Attention",),
    "gemma3_text": ("Gemma3Attention",),
    "phi3": ("Phi3Attention",),
    "phi": ("PhiAttention",),
    "olmo": ("OlmoAttention",),
    "olmo2": ("Olmo2Attention",),
    "granite": ("GraniteAttention",),
    "starcoder2": ("Starcoder2Attention",),
    "stablelm": ("StableLmAttention",),
    "cohere": ("CohereAttention",),
    "smollm3": ("SmolLM3Attention",),
}


class RecordedAttention(NamedTuple):
    """What a converted layer saw in its last forward (detached, kv heads repeated to the query heads)."""

    q: Tensor
    k: Tensor
    v: Tensor
    key_padding_mask: Tensor | None


class MaskedKVCache(NamedTuple):
    """A softmax layer's keys and values (B, H, T, D) in ``LinearAttentionCache``, with their padding mask.

    key_mask (B, T), True = real: the state cache's masks cover only each call's new tokens (the layers
    decoding from a state need no more), so a softmax layer keeps the mask of its past keys itself.
    """

    k: Tensor
    v: Tensor
    key_mask: Tensor

    @property
    def offset(self) -> int:
        return self.k.shape[-2]


class ConvertedAttention(nn.Module):
    """The project attention of one converted layer, plus the softmax teacher on the same q, k.

    ``teacher_forward`` makes the layer output softmax attention (stage 1); ``record`` keeps the
    last ``RecordedAttention`` it saw, for the distillation loss and the analyses.
    """

    def __init__(self, attention: nn.Module, num_heads: int, head_dim: int, causal: bool) -> None:
        super().__init__()
        self.attention = attention
        self.teacher = SoftmaxAttention(num_heads=num_heads, head_dim=head_dim, causal=causal)
        self.num_heads, self.head_dim, self.causal = num_heads, head_dim, causal
        self.teacher_forward = False
        self.record = False
        self.recorded: RecordedAttention | None = None
        self.pending: LinearStateLayer | None = None  # set by LinearAttentionCache.update for one call

    @property
    def is_linear(self) -> bool:
        """Feature maps and a fixed-size state: linear attention or the sliding-window hybrid (what stage 1 distils)."""
        return isinstance(self.attention, LinearAttention | SlidingWindowLinearAttention)

    @property
    def decodes_from_state(self) -> bool:
        """Whether the attention continues from the state its forward returns, never from past keys:
        linear attention, the sliding-window hybrid, H3, Hyena; every attention but softmax."""
        return not isinstance(self.attention, SoftmaxAttention)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        attention_mask: Tensor | None,
        scaling: float | None = None,
        sliding_window: int | None = None,
    ) -> Tensor:
        """q (B, H, Tq, D); k, v (B, Hkv, Tk, D); returns (B, H, Tq, D).

        ``scaling``: the model's score scale (None: 1/sqrt(D)); ``sliding_window``: the model's window
        for this layer (None: none), both as transformers passes them.
        """
        slot, self.pending = self.pending, None
        self._check_shapes(q, k)
        if sliding_window is not None:
            seen = slot.seen if slot is not None else k.shape[-2]
            if seen > sliding_window:
                raise ValueError(
                    f"this layer of the original model attends within a sliding window of {sliding_window} "
                    f"tokens, but the converted attention (and its softmax teacher) attends to every earlier "
                    f"token, which equals the window only up to {sliding_window} tokens; got {seen}. Keep "
                    "sequences within the window, or build the model with sliding windows off "
                    "(config.sliding_window=None, or use_sliding_window=False) to convert to global attention"
                )
        if scaling is not None and abs(scaling * self.head_dim**0.5 - 1.0) > 1e-6:
            # scores q.k * scaling = (q * scaling * sqrt(D)).k / sqrt(D): teacher, student and the
            # distillation loss all see the query whose 1/sqrt(D)-scaled softmax is the original's
            q = q * (scaling * self.head_dim**0.5)
        if k.shape[1] != q.shape[1]:  # grouped-query attention: share each kv head across its group
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        key_padding_mask = _key_padding_mask(attention_mask, k.shape[-2])
        if self.record:
            self.recorded = RecordedAttention(q.detach(), k.detach(), v.detach(), key_padding_mask)
        if slot is not None:
            return self._continue(slot, q, k, v, key_padding_mask)
        attention = self.teacher if self.teacher_forward else self.attention
        past = k.shape[-2] - q.shape[-2]
        if past == 0:
            return attention(q, k, v, key_padding_mask=key_padding_mask)[0]
        if not self.causal or past < 0:
            raise ValueError(
                f"converted self-attention got {q.shape[-2]} queries and {k.shape[-2]} keys; only causal "
                "models with a key cache (queries = the last keys) may differ"
            )
        if not isinstance(attention, SoftmaxAttention):
            raise ValueError(
                f"a key cache handed this {type(attention).__name__} layer {past} earlier keys; layers that "
                "decode from their own state (linear, H3, Hyena) continue from it instead: pass "
                "cache=LinearAttentionCache(model) to generate() or to the forward (past_key_values= before "
                "transformers 5.24; hedgehog.models.conversion)"
            )
        k_past, k_new = k.split([past, q.shape[-2]], dim=-2)
        v_past, v_new = v.split([past, q.shape[-2]], dim=-2)
        # SoftmaxAttention masks the cached and the new keys together: the whole padding mask goes in
        return attention(q, k_new, v_new, cache=KVCache(k_past, v_past), key_padding_mask=key_padding_mask)[0]

    def _check_shapes(self, q: Tensor, k: Tensor) -> None:
        """The feature maps are per head: other head counts or dims would fail deep in an einsum."""
        heads, kv_heads, dim = q.shape[1], k.shape[1], q.shape[-1]
        if heads != self.num_heads or dim != self.head_dim or k.shape[-1] != dim or heads % kv_heads:
            raise ValueError(
                f"this converted attention was built for {self.num_heads} query heads of dimension "
                f"{self.head_dim}, but got q {tuple(q.shape)} and k {tuple(k.shape)} laid out (batch, heads, "
                "tokens, head_dim) (key heads must divide query heads); the model's attention shape changed "
                "after conversion: revert(model) and convert it again"
            )

    def _continue(
        self, slot: LinearStateLayer, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None
    ) -> Tensor:
        """This call's tokens from the layer's stored state (a softmax layer's: its keys, values and
        their mask); the new state replaces it."""
        if self.teacher_forward:
            raise RuntimeError(
                "the distill stage outputs softmax attention, which needs every past key, but "
                "LinearAttentionCache keeps only the linear state; call set_stage(model, 'finetune') "
                "before generating with it"
            )
        done = 0 if slot.state is None else slot.state.offset
        if done + q.shape[-2] != slot.seen:
            raise RuntimeError(
                f"LinearAttentionCache layer has seen {slot.seen} tokens but its state holds {done} and this "
                f"call brings {q.shape[-2]}; a forward through this cache stopped part-way: start a new cache"
            )
        if isinstance(self.attention, SoftmaxAttention):
            out, slot.state = self._continue_softmax(slot.state, q, k, v, key_padding_mask)
            return out
        out, slot.state = self.attention(q, k, v, cache=slot.state, key_padding_mask=key_padding_mask)
        return out

    def _continue_softmax(
        self, state: MaskedKVCache | None, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None
    ) -> tuple[Tensor, MaskedKVCache]:
        """Softmax over the stored and the new keys; the mask of the new ones joins the stored mask."""
        new = key_padding_mask
        if new is None:
            new = torch.ones(k.shape[0], k.shape[-2], dtype=torch.bool, device=k.device)
        mask = new.bool() if state is None else torch.cat([state.key_mask, new.bool()], dim=-1)
        past = None if state is None else KVCache(state.k, state.v)
        out, keys = self.attention(q, k, v, cache=past, key_padding_mask=mask)
        return out, MaskedKVCache(keys.k, keys.v, mask)


def _key_padding_mask(attention_mask: Tensor | None, num_keys: int) -> Tensor | None:
    """(B, Tk) bool, True for keys to attend to, from transformers' 4D mask (the last query row sees them all)."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 4 or attention_mask.shape[-1] != num_keys:
        raise ValueError(
            f"expected a (batch, 1, queries, {num_keys}) attention mask from transformers, got shape "
            f"{tuple(attention_mask.shape)}"
        )
    last_row = attention_mask[:, 0, -1, :]
    return last_row if last_row.dtype == torch.bool else last_row == 0


def _hedgehog_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, None]:
    """The function transformers calls: delegates to the module's converted attention; (B, T, H, D) out."""
    converted = getattr(module, CHILD, None)
    if converted is None:
        raise RuntimeError(
            f"{type(module).__name__} runs attn_implementation={ATTN_IMPLEMENTATION!r} but has no "
            f"{CHILD}; convert the model with hedgehog.models.conversion.convert(model, attention)"
        )
    out = converted(query, key, value, attention_mask, scaling, kwargs.get("sliding_window"))
    return out.transpose(1, 2).contiguous(), None


# Masks as for sdpa: boolean, or None where only causality is needed (it comes from the module).
AttentionInterface.register(ATTN_IMPLEMENTATION, _hedgehog_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)


def attention_modules(model: PreTrainedModel) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every self-attention module ``convert`` swaps in this model."""
    model_type = model.config.model_type
    if model_type not in ATTENTION_CLASSES:
        raise ValueError(
            f"conversion supports model types {sorted(ATTENTION_CLASSES)}, got {model_type!r}; add its "
            "self-attention class to hedgehog.models.conversion.ATTENTION_CLASSES if it calls "
            "transformers' attention interface"
        )
    names = ATTENTION_CLASSES[model_type]
    for name, module in model.named_modules():
        if type(module).__name__ in names and not getattr(module, "is_cross_attention", False):
            yield name, module


def _heads_and_dim(module: nn.Module) -> tuple[int, int]:
    heads = getattr(module, "num_heads", None) or getattr(module, "num_attention_heads", None)
    heads = heads or module.config.num_attention_heads
    head_dim = getattr(module, "head_dim", None) or module.attention_head_size
    return int(heads), int(head_dim)


def convert(model: PreTrainedModel, attention: Callable[..., nn.Module]) -> list[str]:
    """Swap every self-attention of ``model`` for ``attention(num_heads=, head_dim=, causal=)``, in place.

    ``attention`` is a project attention constructor (the Hydra partial from conf/attention/); one
    that names ``layer_index`` or ``num_layers`` also gets the layer's index among the converted
    modules (model order) and their count (``build_attention``).
    Pretrained q/k/v/o weights are kept; returns the names of the converted modules.
    """
    if getattr(model, "hedgehog_previous_attn", None) is not None:
        raise ValueError("model is already converted; call revert(model) before converting it again")
    converted = []
    modules = list(attention_modules(model))
    for index, (name, module) in enumerate(modules):
        heads, head_dim = _heads_and_dim(module)
        softcap = getattr(module, "attn_logit_softcapping", None)
        if softcap is not None:
            raise ValueError(
                f"{name} soft-caps its attention scores (cap * tanh(scores / cap), cap = {softcap}: "
                "Gemma-2), which neither the softmax teacher nor linear attention computes; build the model "
                "with attn_logit_softcapping=None to convert it (its outputs then differ from the pretrained "
                "model's)"
            )
        causal = bool(getattr(module, "is_causal", False))
        project = build_attention(
            attention,
            num_heads=heads,
            head_dim=head_dim,
            causal=causal,
            layer_index=index,
            num_layers=len(modules),
        )
        # on the device of the layer it joins (feature maps stay float32; autocast runs them in half)
        converted_attention = ConvertedAttention(project, heads, head_dim, causal)
        anchor = next(module.parameters(), None)
        module.add_module(
            CHILD, converted_attention if anchor is None else converted_attention.to(anchor.device)
        )
        converted.append(name)
    if not converted:
        raise ValueError(
            f"found no self-attention of classes {ATTENTION_CLASSES[model.config.model_type]} in "
            f"{type(model).__name__}; this transformers version names them differently: update ATTENTION_CLASSES"
        )
    model.hedgehog_previous_attn = model.config._attn_implementation
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    set_stage(model, "finetune")
    if hasattr(model, "generate") and generates_from_state(model):
        model.generate = MethodType(_generate_from_state, model)
    return converted


def generates_from_state(model: nn.Module) -> bool:
    """Whether a converted model decodes through ``LinearAttentionCache``: every layer causal and at
    least one that decodes from its own state (the others, softmax, keep their keys in that cache)."""
    layers = converted_layers(model)
    return all(layer.causal for layer in layers) and any(layer.decodes_from_state for layer in layers)


def _generate_from_state(self: PreTrainedModel, *args, **kwargs):
    """``generate`` of a converted model whose layers decode from their own state: with no cache
    given, it brings its own ``LinearAttentionCache`` (transformers' default key cache would be refused
    by those layers, and releases before 5.24 ignore ``cache=``, decoding with no past at all)."""
    from hedgehog.models.cache import LinearAttentionCache

    if (
        kwargs.get("cache") is None
        and kwargs.get("past_key_values") is None
        and kwargs.get("use_cache", True)
    ):
        kwargs[_cache_keyword(self)] = LinearAttentionCache(self)
    return type(self).generate(self, *args, **kwargs)


def _cache_keyword(model: PreTrainedModel) -> str:
    """The forward's name for the cache: ``cache`` from transformers 5.24, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


def revert(model: PreTrainedModel) -> PreTrainedModel:
    """Undo ``convert``: remove the converted attentions and restore the previous attention implementation."""
    previous = getattr(model, "hedgehog_previous_attn", None)
    if previous is None:
        raise ValueError("model was not converted (no hedgehog_previous_attn); nothing to revert")
    for _, module in attention_modules(model):
        delattr(module, CHILD)
    model.__dict__.pop("generate", None)  # the class's own generate again
    model.set_attn_implementation(previous)
    model.hedgehog_previous_attn = None
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def is_converted(model: nn.Module) -> bool:
    """Whether ``convert`` swapped attention in this model (a model trained from scratch holds its own)."""
    return any(isinstance(m, ConvertedAttention) for m in model.modules())


def converted_layers(model: nn.Module) -> list[ConvertedAttention]:
    """The converted attentions of a model, in layer order."""
    layers = [m for m in model.modules() if isinstance(m, ConvertedAttention)]
    if not layers:
        raise ValueError("model has no converted attention; call convert(model, attention) first")
    return layers


def _distilled(name: str) -> bool:
    return any(part in name for part in DISTILLED)


def feature_map_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters of the feature maps and window factors (what stage 1 trains), by name."""
    return {n: p for n, p in model.named_parameters() if _distilled(n)}


def set_stage(model: nn.Module, stage: str) -> dict[str, int]:
    """Freeze and route for one stage of the recipe; returns the trainable and frozen parameter counts."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    trainable = set(feature_map_parameters(model)) if stage == "distill" else None
    lora = getattr(model, "hedgehog_lora", None)  # set by hedgehog.models.lora.add_lora
    if stage == "finetune" and lora is not None:
        trainable = {n for n, _ in model.named_parameters() if ".lora_" in n}
        if lora["train_feature_maps"]:
            trainable |= set(feature_map_parameters(model))
    for name, p in model.named_parameters():
        p.requires_grad_(trainable is None or name in trainable)
    for layer in converted_layers(model):
        layer.teacher_forward = layer.record = stage == "distill"
        layer.recorded = None
    counts = {"trainable": 0, "frozen": 0}
    for p in model.parameters():
        counts["trainable" if p.requires_grad else "frozen"] += p.numel()
    return counts


def feature_map_state_dict(model: nn.Module, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The trained part of stage 1 (feature-map parameters and buffers, window factors), to save and load alone.

    ``state``: the model's state dict when it is already at hand (e.g. gathered from sharded ranks)."""
    state = model.state_dict() if state is None else state
    return {k: v.detach().clone() for k, v in state.items() if _distilled(k)}


def load_feature_maps(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load feature maps saved by ``feature_map_state_dict`` into a model converted with the same attention."""
    expected = set(feature_map_state_dict(model))
    if set(state) != expected:
        raise ValueError(
            f"feature maps do not match the converted model: missing {sorted(expected - set(state))[:4]}, "
            f"unexpected {sorted(set(state) - expected)[:4]}; convert with the attention used in stage 1"
        )
    model.load_state_dict(state, strict=False)


def distilled_layers(model: nn.Module) -> list[ConvertedAttention]:
    """The converted layers stage 1 distils (linear or hybrid), in layer order."""
    layers = [layer for layer in converted_layers(model) if layer.is_linear]
    if not layers:
        raise ValueError(
            "distillation needs linear attention (feature maps), but no converted layer has any (softmax, "
            "H3, Hyena); train these end to end (distill_steps 0)"
        )
    return layers


def distillation_loss(layer: ConvertedAttention, loss: str = "xent") -> Tensor:
    """Attention-distillation loss of one converted linear or hybrid layer, from what it recorded last forward.

    Averaged over (batch, head, real query row): padded positions are left out of teacher and student.
    A sliding-window hybrid's student is the hybrid itself (its window and current window factors).
    """
    if layer.recorded is None:
        raise RuntimeError(
            "a converted layer recorded no q, k; call set_stage(model, 'distill') and run a forward first"
        )
    q, k, v, mask = layer.recorded
    attention = layer.attention
    fq, fk = attention.features(q, k)
    if mask is not None and bool(mask.all()):
        mask = None
    hybrid = {}
    if isinstance(attention, SlidingWindowLinearAttention):
        hybrid = {"window": attention.window, "window_factor": attention.window_factors()}
    return attention_distillation_loss(
        q, k, fq, fk, causal=layer.causal, loss=loss, v=v, key_padding_mask=mask, **hybrid
    )


def distillation_losses(model: nn.Module, loss: str = "xent") -> list[Tensor]:
    """``distillation_loss`` of every converted linear or hybrid layer (softmax layers have nothing to distil)."""
    return [distillation_loss(layer, loss) for layer in distilled_layers(model)]


def distillation_backward(
    model: nn.Module,
    loss: str = "xent",
    block: int | None = None,
    backward: Callable[[Tensor], None] = Tensor.backward,
) -> Tensor:
    """Stage 1's loss, the mean of the layers' ``distillation_loss``, with its gradients; returns the loss.

    ``block=None`` builds every layer's loss graph and runs one backward (the joint loss). ``block=n``
    builds n layers' graphs at a time and runs their backward before the next block's: each layer's
    feature maps depend on its own loss only, so the accumulated gradients are the joint loss's, while
    the memory held is one block's graph (plus the q, k, v every layer recorded in the no-grad teacher
    forward), not every layer's. ``backward`` runs a backward (Lightning's ``manual_backward``).
    """
    if block is not None and block < 1:
        raise ValueError(f"block must be a positive number of layers (or None: all at once), got {block}")
    layers = distilled_layers(model)
    size = len(layers) if block is None else block
    parts = []
    for start in range(0, len(layers), size):
        part = torch.stack([distillation_loss(layer, loss) for layer in layers[start : start + size]])
        part = part.sum() / len(layers)
        backward(part)
        parts.append(part.detach())
    return torch.stack(parts).sum()
