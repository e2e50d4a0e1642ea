"""Lightning modules: one per kind of training objective."""

from hedgehog.tasks.language_modeling import LanguageModelingTask

__all__ = ["LanguageModelingTask"]
