"""Models with pluggable attention: small own models and conversions of pretrained ones."""

from hedgehog.models.classifier import TransformerClassifier
from hedgehog.models.lm import TransformerLM

__all__ = ["TransformerClassifier", "TransformerLM"]
