"""Saved converted models: only what conversion trained, beside the name of the base model it needs.

A folder written by ``save_converted`` holds two files:

- ``trained.safetensors``: every tensor of the converted attention modules (the feature maps, and
  any other parameters or buffers a converted attention keeps, such as hybrid mixing weights;
  the softmax teacher has none) and every other parameter that is set to train (``requires_grad``):
  after ``add_lora`` the adapters (A, B of each wrapped projection), or with ``merge_lora`` the
  merged projection weights W + (alpha / r) B A instead; after stage 1 alone nothing more; after
  a finetune of every weight (no LoRA) the whole model, so that nothing trained is lost;
- ``hedgehog_config.json``: the format version, the base model (its name: a packaged stand-in,
  hub id or folder; its transformers class; a fingerprint of its shape: model_type, layers,
  hidden size, heads, key/value heads, head dim, vocabulary; and a digest of its weights that
  were not saved, ``base_digest``), the attention config (the Hydra
  node that built the converted attention, as plain data) and the LoRA settings.

``load_converted`` loads the base model, checks its fingerprint and weights digest, converts it with the attention
built by ``hydra.utils.instantiate``, re-attaches LoRA (unless merged) and loads the tensors with
``safetensors`` (nothing is unpickled). The result generates with ``LinearAttentionCache``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import transformers
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from hedgehog.models.conversion import CHILD, convert, converted_layers
from hedgehog.models.lora import add_lora, lora_state_dict, merged_lora_weights
from hedgehog.models.pretrained import pretrained_path

FORMAT_VERSION = 1
CONFIG_FILE = "hedgehog_config.json"
WEIGHTS_FILE = "trained.safetensors"


def fingerprint(config: PretrainedConfig) -> dict[str, Any]:
    """The shape of a base model, from its config: what trained tensors must agree with."""
    heads, hidden = config.num_attention_heads, config.hidden_size
    return {
        "model_type": config.model_type,
        "num_hidden_layers": config.num_hidden_layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": getattr(config, "head_dim", None) or hidden // heads,
        "vocab_size": getattr(config, "vocab_size", None),  # None for ViT
    }


def base_digest(model: nn.Module, skip: set[str], samples: int = 1024) -> str:
    """A hash of the base weights that were not saved: the same checkpoint in any dtype or device gives the same.

    Each tensor contributes its name, shape and about ``samples`` evenly spaced values rounded to
    bfloat16; keys are those of the plain model (LoRA's ``base_layer`` folded away).
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        key = key.replace(".base_layer.", ".")
        if key in skip or f".{CHILD}." in key or ".lora_" in key:
            continue
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // samples)].to("cpu", torch.bfloat16).view(torch.int16)
        digest.update(f"{key}{tuple(tensor.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def converted_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Every parameter and buffer of the converted attention modules (feature maps, mixing weights)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if f".{CHILD}." in k}


def _trained_tensors(model: nn.Module, merged: bool) -> dict[str, Tensor]:
    """The converted attention's tensors and every parameter set to train; LoRA merged if ``merged``."""
    training = {name for name, p in model.named_parameters() if p.requires_grad}
    tensors = converted_state_dict(model) | {
        k: v.detach().clone() for k, v in model.state_dict().items() if k in training
    }
    if merged:
        tensors = {k: v for k, v in tensors.items() if ".lora_" not in k} | merged_lora_weights(model)
    return tensors


def save_converted(
    model: PreTrainedModel,
    folder: str | Path,
    base_model: str,
    attention_config: dict | DictConfig,
    merge_lora: bool = False,
) -> Path:
    """Write what conversion trained in ``model`` to ``folder``; ``base_model`` names the model it came from.

    ``attention_config`` is the Hydra node the converted attention was built from (``cfg.attention``).
    ``merge_lora`` stores the projections with the adapters merged in instead of the adapters.
    """
    converted_layers(model)  # raises unless converted
    lora = getattr(model, "hedgehog_lora", None)
    if merge_lora and lora is None:
        raise ValueError("merge_lora=True but the model has no LoRA adapters (add_lora was not called)")
    attention = (
        OmegaConf.to_container(attention_config, resolve=True)
        if isinstance(attention_config, DictConfig)
        else attention_config
    )
    if not isinstance(attention, dict) or "_target_" not in attention:
        raise ValueError(
            f"attention_config must be the Hydra node that built the attention (a mapping with _target_), "
            f"got {attention_config!r}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in _trained_tensors(model, merge_lora).items()}
    save_file(tensors, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    record = {
        "format_version": FORMAT_VERSION,
        "base_model": {
            "name": base_model,
            "architecture": type(model).__name__,
            "fingerprint": fingerprint(model.config),
            "weights_digest": base_digest(model, set(tensors)),
        },
        "attention": attention,
        "lora": None if lora is None else {**lora, "merged": merge_lora},
    }
    (folder / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return folder


def load_converted(
    folder: str | Path, base_model: str | None = None, dtype: torch.dtype | None = None
) -> PreTrainedModel:
    """Rebuild a model saved by ``save_converted``: base model, conversion, LoRA, trained tensors; in eval mode.

    ``base_model`` overrides the saved name (a packaged stand-in, hub id or folder), e.g. when the
    base model has moved; it must have the saved fingerprint and weights digest.
    """
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} holds no saved converted model (expected {CONFIG_FILE} and {WEIGHTS_FILE}, written "
            "by hedgehog.models.saving.save_converted)"
        )
    record = json.loads((folder / CONFIG_FILE).read_text())
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{folder / CONFIG_FILE} has format version {record.get('format_version')}; this hedgehog reads "
            f"version {FORMAT_VERSION}"
        )
    base = record["base_model"]
    name = base_model or base["name"]
    architecture = getattr(transformers, base["architecture"], None)
    if architecture is None:
        raise ValueError(
            f"the saved model is a {base['architecture']}, which this transformers {transformers.__version__} "
            "does not have"
        )
    extra = {} if dtype is None else {"dtype": dtype}
    model = architecture.from_pretrained(pretrained_path(name), **extra)
    found = fingerprint(model.config)
    if found != base["fingerprint"]:
        differences = ", ".join(
            f"{key} {base['fingerprint'].get(key)} vs {found.get(key)}"
            for key in found
            if found.get(key) != base["fingerprint"].get(key)
        )
        raise ValueError(
            f"{folder} was trained on base model {base['name']!r} with {base['fingerprint']}, but {name!r} has "
            f"{found} (saved vs given: {differences}); pass base_model= the model it was trained from"
        )
    convert(model, instantiate(record["attention"]))
    lora = record["lora"]
    if lora is not None and not lora["merged"]:
        add_lora(model, **{k: v for k, v in lora.items() if k != "merged"})
    saved = load_file(folder / WEIGHTS_FILE)
    digest = base_digest(model, set(saved))
    if digest != base["weights_digest"]:
        raise ValueError(
            f"{folder} was trained on base model {base['name']!r} (weights digest {base['weights_digest']}), but "
            f"{name!r} has other weights of the same shapes (digest {digest}): a different checkpoint (e.g. a chat "
            "rather than a base release); pass base_model= the exact checkpoint it was trained from"
        )
    expected = model.state_dict()
    missing = sorted(set(converted_state_dict(model)) - set(saved))
    if lora is not None and not lora["merged"]:
        missing += sorted(set(lora_state_dict(model)) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{folder / WEIGHTS_FILE} does not match {name!r} converted with the saved attention: missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, tensor in saved.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(
                f"{key} was saved with shape {tuple(tensor.shape)} but {name!r} converted with the saved attention "
                f"has {tuple(expected[key].shape)}; the base model or the attention config differs from training"
            )
    model.load_state_dict(saved, strict=False)
    return model.eval()
