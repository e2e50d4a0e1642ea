"""Summarisation metrics: ROUGE-1, ROUGE-2 and ROUGE-L F1 (x100), as papers report them for SAMSum.

Computed with Google's ``rouge-score`` (Porter stemming on, its default tokenizer: lowercase,
alphanumeric tokens); ``evaluate.load("rouge")`` would fetch a script from the hub. A prediction
with several references scores against each and keeps, per ROUGE type, the best F1
(``RougeScorer.score_multi``); the result is the mean over predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 x100 of ``predictions`` against their ``references`` (one text or a list each)."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(
            f"rouge needs one reference (or list of references) per prediction and at least one prediction; "
            f"got {len(predictions)} predictions and {len(references)} references"
        )
    # imported here: rouge-score pulls in nltk, which only the summarisation experiments need
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        targets = [reference] if isinstance(reference, str) else list(reference)
        if not targets:
            raise ValueError(f"prediction {i} has an empty list of references")
        scores = scorer.score_multi(targets, prediction)
        for kind in ROUGE_TYPES:
            totals[kind] += scores[kind].fmeasure
    return {kind: 100.0 * total / len(predictions) for kind, total in totals.items()}
