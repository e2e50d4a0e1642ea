"""Data: generated tasks and loaders; nothing here knows a model."""

from hedgehog.data.associative_recall import AssociativeRecallDataModule, associative_recall

__all__ = ["AssociativeRecallDataModule", "associative_recall"]
