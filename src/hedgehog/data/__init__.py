"""Data: generated tasks and loaders; nothing here knows a model."""

from hedgehog.data.associative_recall import AssociativeRecallDataModule, associative_recall
from hedgehog.data.language_modeling import LanguageModelingDataModule

__all__ = ["AssociativeRecallDataModule", "LanguageModelingDataModule", "associative_recall"]
