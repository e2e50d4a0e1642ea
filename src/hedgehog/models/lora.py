"""LoRA adapters (peft) on a converted model: what stage 2 of the Llama conversion trains (paper Table 11).

``add_lora`` injects peft's LoRA layers in place (``peft.inject_adapter_in_model``), so the model
stays its transformers class: ``generate`` with ``LinearAttentionCache``, lm-eval's ``HFLM`` and the
project's conversion functions work on it unchanged. Adapters wrap only the named projections
(q/k/v/o by default; Phi-3 fuses q/k/v into ``qkv_proj``), which sit outside the converted
attention modules, so those are left intact. Call it after ``convert``; it records its settings
as ``model.hedgehog_lora``, which ``set_stage(model, "finetune")`` reads to train the adapters
(and the feature maps, with ``train_feature_maps``) with the rest frozen, and ``save_converted``
writes beside the adapters.
"""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn
from transformers import PreTrainedModel

from hedgehog.models.conversion import CHILD, converted_layers, set_stage

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
ADAPTER = "default"  # peft's adapter name; one adapter per model


def add_lora(
    model: PreTrainedModel,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    target_modules: Sequence[str] = LLAMA_TARGETS,
    train_feature_maps: bool = False,
) -> PreTrainedModel:
    """Attach LoRA (rank ``r``, scale ``alpha / r``) to ``target_modules`` of a converted model, in place.

    Afterwards only the adapters train (plus the feature maps if ``train_feature_maps``); the
    adapters start at zero (B = 0), so the model's outputs are unchanged until they train.
    """
    converted_layers(model)  # raises unless converted
    if getattr(model, "hedgehog_lora", None) is not None or lora_modules(model):
        raise ValueError("model already has LoRA adapters; add_lora attaches one set per model")
    targets = adapted_names(model, target_modules)
    inside = [name for name in targets if f".{CHILD}" in name]
    if inside:
        raise ValueError(
            f"target_modules {list(target_modules)} match modules inside the converted attention ({inside[:2]}); "
            "name the model's own projections (e.g. q_proj, k_proj, v_proj, o_proj)"
        )
    if not targets:
        raise ValueError(
            f"no module of {type(model).__name__} is named like target_modules {list(target_modules)}; name "
            "its attention projections (Llama-family: q_proj, k_proj, v_proj, o_proj; Phi-3: qkv_proj, o_proj)"
        )
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), bias="none"
    )
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    model.hedgehog_lora = {
        "r": r,
        "alpha": alpha,
        "dropout": dropout,
        "target_modules": list(target_modules),
        "train_feature_maps": train_feature_maps,
    }
    set_stage(model, "finetune")
    return model


def adapted_names(model: nn.Module, target_modules: Sequence[str]) -> list[str]:
    """Names of the modules LoRA wraps for ``target_modules`` (peft's rule: the last name component)."""
    return [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in set(target_modules)]


def lora_modules(model: nn.Module) -> dict[str, LoraLayer]:
    """The layers LoRA wraps, by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapter weights (A and B of every wrapped layer), detached copies."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if ".lora_" in k}


def merged_lora_weights(model: nn.Module) -> dict[str, Tensor]:
    """W + (alpha / r) B A of every wrapped layer, under the plain model's key (``<layer>.weight``).

    The model is not changed; a model without adapters loads these as its own weights.
    """
    layers = lora_modules(model)
    if not layers:
        raise ValueError("model has no LoRA adapters; call add_lora(model) first")
    merged = {}
    for name, layer in layers.items():
        base = layer.get_base_layer().weight
        merged[f"{name}.weight"] = (base + layer.get_delta_weight(ADAPTER).to(base.dtype)).detach().clone()
    return merged
