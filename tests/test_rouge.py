"""ROUGE-1/2/L F1 against cases computed by hand."""

import pytest

from hedgehog.tasks.metrics import rouge


def test_identical_texts_score_100():
    assert rouge(["The cat sat on the mat."], ["the cat sat on the mat"]) == pytest.approx(
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    )


def test_one_word_changed():
    # unigrams: 5 of 6 shared; bigrams: the-cat, on-the, the-mat of 5; LCS: the cat on the mat (5 of 6)
    scores = rouge(["the cat sat on the mat"], ["the cat lay on the mat"])
    assert scores == pytest.approx({"rouge1": 500 / 6, "rouge2": 60.0, "rougeL": 500 / 6})


def test_stemming_is_on():
    # stems: run dog | the dog run -> unigrams P 2/2, R 2/3 (F 0.8); no bigram; LCS 1: P 1/2, R 1/3 (F 0.4)
    scores = rouge(["running dogs"], ["the dog runs"])
    assert scores == pytest.approx({"rouge1": 80.0, "rouge2": 0.0, "rougeL": 40.0})


def test_several_references_keep_the_best_per_type_and_predictions_are_averaged():
    # reference 1 (reversed): R1 100, R2 0, RL 1/4; reference 2: R1 2/4, R2 1/3, RL 2/4
    refs = ["date cherry banana apple", "apple banana kiwi lemon"]
    scores = rouge(["apple banana cherry date"], [refs])
    assert scores == pytest.approx({"rouge1": 100.0, "rouge2": 100 / 3, "rougeL": 50.0})
    mean = rouge(["apple banana cherry date", "the cat sat on the mat"], [refs, "the cat lay on the mat"])
    assert mean == pytest.approx(
        {"rouge1": (100 + 500 / 6) / 2, "rouge2": (100 / 3 + 60) / 2, "rougeL": (50 + 500 / 6) / 2}
    )


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match=r"one reference .* per prediction"):
        rouge(["a b"], ["a", "b"])
    with pytest.raises(ValueError, match="empty list of references"):
        rouge(["a b"], [[]])
