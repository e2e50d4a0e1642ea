"""lm-evaluation-harness on converted models: the documented call, and the one piece of glue generation needs.

Loglikelihood tasks (multiple choice, perplexity) need no glue: a converted model and its tokenizer
go straight into the harness's Hugging Face wrapper,
``lm_eval.models.huggingface.HFLM(pretrained=model, tokenizer=tokenizer)``, whose loglikelihood
path runs one full forward per batch (``model(input_ids).logits``, right-padded, no earlier keys),
which linear layers compute like any other forward. Generative tasks (``generate_until``) call
``model.generate(use_cache=True)``, which hands a model transformers' key cache; a model whose
converted layers are all linear raises on it and continues from its fixed-size state instead.
``harness_lm`` returns the wrapper that passes a fresh ``LinearAttentionCache`` to each
``generate`` call for such models (softmax conversions keep the key cache)::

    lm = harness_lm(model, tokenizer, batch_size=8)
    results = lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])
"""

from __future__ import annotations

from typing import Any

from lm_eval.models.huggingface import HFLM
from torch import Tensor
from transformers import PreTrainedModel

from hedgehog.models.cache import LinearAttentionCache
from hedgehog.models.conversion import converted_layers


class ConvertedHFLM(HFLM):
    """``HFLM`` whose generation decodes linear models from their state (``LinearAttentionCache``)."""

    def _model_generate(
        self, context: Tensor, max_length: int, stop: list[str], **generation_kwargs
    ) -> Tensor:
        if all(layer.is_linear and layer.causal for layer in converted_layers(self.model)):
            generation_kwargs["cache"] = LinearAttentionCache(self.model)
        return super()._model_generate(context, max_length, stop, **generation_kwargs)


def harness_lm(model: PreTrainedModel, tokenizer: Any, **kwargs) -> HFLM:
    """The harness's model for a converted causal LM (``kwargs``: HFLM's, e.g. ``batch_size``)."""
    return ConvertedHFLM(pretrained=model, tokenizer=tokenizer, **kwargs)
