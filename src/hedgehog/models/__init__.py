"""Models with pluggable attention: small own models and conversions of pretrained ones."""

from hedgehog.models.lm import TransformerLM

__all__ = ["TransformerLM"]
