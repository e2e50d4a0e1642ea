"""Finetuned conversion: GLUE and embedded data, GLUE metrics, the two-stage task, the experiment's configs."""

import csv
import json
import random
from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef
from transformers import BertConfig, BertForSequenceClassification

from experiments.bert_glue import make_table as bert_table
from hedgehog.attention import HedgehogFeatureMap, LinearAttention, SoftmaxAttention
from hedgehog.data.text_classification import (
    GLUE_TASKS,
    TextClassificationDataModule,
    acceptability_examples,
    bbc_articles,
    local_shuffle,
)
from hedgehog.models.conversion import convert, feature_map_parameters
from hedgehog.models.pretrained import load_tokenizer
from hedgehog.results import compare_seeds
from hedgehog.tasks.conversion import ConversionTask, task_metrics
from hedgehog.train import train

from .pipeline import compose_config

GLUE_ROWS = {
    "sentence": ["the cat sat on the mat .", "mat the on sat cat the ."],
    "sentence1": ["a man plays a guitar .", "the market fell today ."],
    "sentence2": ["someone plays music .", "stocks rose sharply ."],
    "question": ["who plays guitar ?", "what fell ?"],
    "question1": ["how do i learn python ?", "what is the time ?"],
    "question2": ["how can i learn python ?", "where is the station ?"],
    "premise": ["a dog runs in a park .", "nobody is home ."],
    "hypothesis": ["an animal is outside .", "the house is full ."],
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("all-MiniLM-L6-v2")


def write_glue(folder, task: str, ext: str, n: int = 8) -> None:
    """n rows per split of one GLUE task, with GLUE's column names, as csv, tsv or jsonl."""
    spec = GLUE_TASKS[task]
    rows = []
    for i in range(n):
        row = {k: GLUE_ROWS[k][i % 2] for k in spec.text_keys}
        row["label"] = round(i * 0.5, 1) if spec.num_labels == 1 else i % spec.num_labels
        row["idx"] = i
        rows.append(row)
    (folder / task).mkdir(parents=True, exist_ok=True)
    for split in ("train", spec.eval_split):
        path = folder / task / f"{split}.{ext}"
        if ext == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if ext == "tsv" else ",")
                writer.writeheader()
                writer.writerows(rows)


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_glue_loader_reads_local_files_with_the_glue_schema(task, tmp_path, tokenizer):
    ext = {"cola": "tsv", "mnli": "jsonl"}.get(task, "csv")
    write_glue(tmp_path, task, ext)
    data = TextClassificationDataModule(task, tokenizer, max_length=16, batch_size=4, glue_dir=str(tmp_path))
    data.setup()
    spec = GLUE_TASKS[task]
    assert data.num_labels == spec.num_labels and data.metrics == spec.metrics
    train_split, test_split = data.splits["train"].encoded, data.splits["test"].encoded
    assert train_split["input_ids"].shape == (8, 16)
    assert torch.equal(data.splits["val"].encoded["input_ids"], test_split["input_ids"])  # the dev set
    if len(spec.text_keys) == 2:  # pairs are encoded together: two [SEP]
        assert (train_split["input_ids"][0] == tokenizer.sep_token_id).sum() == 2
    assert train_split["labels"].dtype == (torch.float32 if spec.num_labels == 1 else torch.long)
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}


def test_glue_loader_says_what_is_missing(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match=r"rte/train"):
        TextClassificationDataModule("rte", tokenizer, glue_dir=str(tmp_path)).setup()
    write_glue(tmp_path, "rte", "csv")
    (tmp_path / "rte" / "train.csv").write_text("sentence1,label\na,0\nb,1\n")
    with pytest.raises(ValueError, match="lacks columns"):
        TextClassificationDataModule("rte", tokenizer, glue_dir=str(tmp_path)).setup()
    with pytest.raises(ValueError, match="unknown task"):
        TextClassificationDataModule("wnli", tokenizer)
    write_glue(tmp_path, "sst2", "csv", n=4)
    small = TextClassificationDataModule("sst2", tokenizer, batch_size=8, glue_dir=str(tmp_path))
    small.setup()
    with pytest.raises(ValueError, match="fewer than one batch"):
        small.train_dataloader()


def test_embedded_splits_are_disjoint_and_balanced():
    splits = {s: {text for text, _ in bbc_articles(s)} for s in ("train", "val", "test")}
    assert not splits["train"] & splits["test"] and not splits["train"] & splits["val"]
    assert sum(len(v) for v in splits.values()) > 2000
    test = acceptability_examples("test")
    labels = [label for _, label in test]
    assert abs(sum(labels) - len(labels) / 2) <= 1
    train_sentences = {s for s, _ in acceptability_examples("train")}
    assert not train_sentences & {s for s, label in test if label == 1}


def test_local_shuffle_permutes_one_short_window():
    rng = random.Random(0)
    sentence = "the quick brown fox jumps over the lazy dog near the river bank"
    for _ in range(50):
        shuffled = local_shuffle(sentence, rng).split()
        words = sentence.split()
        assert shuffled != words and sorted(shuffled) == sorted(words)
        changed = [i for i, (a, b) in enumerate(zip(words, shuffled, strict=True)) if a != b]
        assert changed[-1] - changed[0] < 5


def test_task_metrics_are_glue_metrics():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (200,), generator=g)
    predictions = torch.where(torch.rand(200, generator=g) < 0.8, labels, 1 - labels)
    m = task_metrics(("accuracy", "f1", "matthews"), predictions, labels, num_labels=2)
    assert m["accuracy"] == pytest.approx(100 * (predictions == labels).float().mean().item())
    assert m["f1"] == pytest.approx(100 * f1_score(labels, predictions), abs=1e-4)
    assert m["matthews"] == pytest.approx(100 * matthews_corrcoef(labels, predictions), abs=1e-4)
    gold = torch.rand(100, generator=g) * 5
    guess = gold + torch.randn(100, generator=g)
    m = task_metrics(("pearson", "spearman"), guess, gold, num_labels=1)
    assert m["pearson"] == pytest.approx(100 * pearsonr(guess, gold).statistic, abs=1e-3)
    assert m["spearman"] == pytest.approx(100 * spearmanr(guess, gold).statistic, abs=1e-3)
    with pytest.raises(ValueError, match="unknown metric"):
        task_metrics(("bleu",), predictions, labels, num_labels=2)


def tiny_classifier(num_labels: int, attention, vocab_size: int) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=num_labels,
        attn_implementation="eager",
    )
    model = BertForSequenceClassification(config)
    convert(model, attention)
    return model


class Snapshot(pl.Callback):
    """Copies the model's weights after a given global step."""

    def __init__(self, step: int) -> None:
        self.step, self.weights = step, None

    def on_train_batch_end(self, trainer, module, *args) -> None:
        if trainer.global_step == self.step:
            self.weights = {k: v.clone() for k, v in module.model.state_dict().items()}


def fit_tiny(tmp_path, tokenizer, attention, distill_steps: int, finetune_steps: int, snapshot_at: int = 0):
    write_glue(tmp_path, "cola", "csv", n=32)
    data = TextClassificationDataModule(
        "cola", tokenizer, max_length=12, batch_size=8, glue_dir=str(tmp_path)
    )
    task = ConversionTask(
        model=partial(tiny_classifier, attention=attention, vocab_size=tokenizer.vocab_size),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        distill_optimizer=partial(torch.optim.AdamW, lr=1e-2),
        distill_steps=distill_steps,
        finetune_steps=finetune_steps,
        save_weights=str(tmp_path / "weights.pt"),
        save_feature_maps=str(tmp_path / "maps.pt"),
        feature_map_snapshots=(1,) if distill_steps else (),
    )
    snapshot = Snapshot(snapshot_at)
    trainer = pl.Trainer(
        max_steps=-1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        val_check_interval=1000,
        check_val_every_n_epoch=None,
        callbacks=[snapshot],
    )
    initial = {}

    class Initial(pl.Callback):
        def on_train_start(self, trainer, module) -> None:
            initial.update({k: v.clone() for k, v in module.model.state_dict().items()})

    trainer.callbacks.append(Initial())
    trainer.fit(task, datamodule=data)
    result = trainer.test(task, datamodule=data, verbose=False)[0]
    return task, trainer, initial, snapshot.weights, result


def test_two_stages_train_feature_maps_then_everything(tmp_path, tokenizer):
    task, trainer, initial, after_stage1, result = fit_tiny(
        tmp_path, tokenizer, partial(LinearAttention, feature_map=HedgehogFeatureMap), 3, 3, snapshot_at=3
    )
    assert trainer.global_step == 6
    maps = {k for k in initial if "feature_map" in k}
    assert maps == set(feature_map_parameters(task.model))
    changed_1 = {k for k in initial if not torch.equal(initial[k], after_stage1[k])}
    assert changed_1 and changed_1 <= maps  # stage 1: only the feature maps
    final = task.model.state_dict()
    changed_2 = {k for k in initial if not torch.equal(after_stage1[k], final[k])}
    assert (
        "bert.encoder.layer.0.attention.self.query.weight" in changed_2 and "classifier.weight" in changed_2
    )
    assert {"test/matthews", "test/score", "test/distill_steps"} <= set(result)
    assert result["test/distill_steps"] == 3
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert saved and not any("converted_attention" in k for k in saved)
    assert set(torch.load(tmp_path / "maps.pt", weights_only=True)) == maps
    assert (tmp_path / "maps-step1.pt").exists()


def test_softmax_and_untrained_maps_skip_stage_one(tmp_path, tokenizer):
    task, trainer, *_, result = fit_tiny(tmp_path, tokenizer, SoftmaxAttention, 5, 2)
    assert trainer.global_step == 2 and result["test/distill_steps"] == 0
    assert task.distill_steps == 0


def test_conversion_task_rejects_negative_steps():
    with pytest.raises(ValueError, match="need distill_steps >= 0 and finetune_steps >= 0"):
        ConversionTask(model=None, optimizer=None, distill_optimizer=None, distill_steps=-1, finetune_steps=0)


@pytest.mark.parametrize(
    ("overrides", "starts_from_teacher", "saves_teacher", "distill_steps"),
    [
        (["experiment=bert_glue_teacher"], False, True, None),
        (["experiment=bert_glue"], True, False, 60),
        (["experiment=bert_glue", "attention=t2r_hh"], True, False, 60),
        (["experiment=bert_glue", "sweep=bert_glue_t2r"], True, False, 0),
    ],
)
def test_bert_glue_recipes(overrides, starts_from_teacher, saves_teacher, distill_steps, tmp_path):
    """BERT-FT (the teacher) is its own experiment; the conversions start from it; T2R's sweep skips stage 1."""
    cfg = compose_config([*overrides, "data.task=bbc_topic", "seed=1"], tmp_path)
    teacher = cfg.teacher_weights
    assert teacher.endswith("bert_glue/teachers/embedded/bbc_topic-s1.pt")
    assert cfg.experiment_name == "bert_glue"  # one table reads the teacher and the conversions
    assert (cfg.model.weights == teacher) is starts_from_teacher and (
        cfg.model.weights is None
    ) is not starts_from_teacher
    assert (cfg.task.save_weights == teacher) is saves_teacher
    assert (cfg.attention_name == "softmax") is saves_teacher
    if distill_steps is not None:
        assert cfg.task.distill_steps == distill_steps


@pytest.mark.parametrize(("scale", "source"), [("embedded", "bbc_topic"), ("paper", "sst2")])
def test_transfer_runs_load_the_maps_the_distillation_runs_save(scale, source, tmp_path):
    """experiment=bert_glue_transfer reads exactly the file experiment=bert_glue_distill writes."""
    transfer = compose_config(
        ["experiment=bert_glue_transfer", f"scale={scale}", f"transfer_source={source}", "seed=1"], tmp_path
    )
    distill = compose_config(
        ["experiment=bert_glue_distill", f"scale={scale}", f"data.task={source}", "seed=1"], tmp_path
    )
    assert transfer.model.feature_maps == distill.task.save_feature_maps
    assert transfer.task.distill_steps == 0 and transfer.model.weights == transfer.teacher_weights


@pytest.mark.slow
def test_hedgehog_conversion_of_minilm_runs_in_the_pipeline(tmp_path):
    cfg = compose_config(
        [
            "experiment=bert_glue",
            "attention=hedgehog",
            "model.weights=null",
            "trainer.fast_dev_run=true",
            "logger=csv",
            "data.num_train=64",
            "callbacks.progress_bar=null",
        ],
        tmp_path,
    )
    record = train(cfg)
    assert record["attention"] == "hedgehog" and record["metrics"]["test/distill_steps"] == 60


def test_table_recover_is_the_ratio_of_task_means():
    table = bert_table
    softmax = {"a": 80.0, "b": 40.0}
    assert table.recover({"a": 70.0, "b": 50.0}, softmax, ["a", "b"]) == pytest.approx(100.0)
    assert table.recover({"a": 60.0}, softmax, ["a", "b"]) is None
    assert table.scale_settings("embedded")["feature_map_task"] == "acceptability"


def test_a_difference_is_claimed_only_with_two_seeds_and_a_significant_welch_test():
    # Hedgehog's two acceptability seeds against Taylor-2's: far apart means, huge spread
    assert compare_seeds([40.5, 0.1], [24.4, 15.2]).startswith("not established (p = ")
    # disjoint seed ranges are not enough with 2 seeds (a 1-in-3 chance under no difference)
    assert compare_seeds([-5.2, -0.1], [40.5, 0.1]).startswith("not established (p = ")
    assert compare_seeds([30.0], [10.0, 12.0]) == "not established (n < 2)"
    assert compare_seeds([0.1, -0.1], [53.1, 52.8]) == "lower (p < 0.001)"
    assert compare_seeds([53.1, 52.8], [0.1, -0.1]) == "higher (p < 0.001)"
    assert compare_seeds([5.0, 6.0], [7.0, 8.5]).startswith("not established (p = 0.")
    assert compare_seeds([0.1, 0.1], [0.1, 0.1]) == "not established (no seed spread)"
    # a seeded row against a row with no seed dependence (one exact value)
    assert compare_seeds([0.123, 0.125], [0.309], b_fixed=True).startswith("lower (p = 0.00")
    assert compare_seeds([0.2, 0.4], [0.309], b_fixed=True).startswith("not established")
    with pytest.raises(ValueError, match="one value"):
        compare_seeds([0.2, 0.4], [0.3, 0.5], b_fixed=True)


def test_table3_ar_setting_has_the_most_rows_then_softmax_furthest_above_chance():
    table = bert_table
    groups = {
        # 2 pairs (chance 50): softmax 60 -> +10; 4 pairs (chance 25): softmax 45 -> +20
        (2, 8, 32): {"softmax": [0.6], "taylor2": [0.5], "hedgehog": [0.5]},
        (4, 16, 32): {"softmax": [0.4, 0.5], "taylor2": [0.25], "hedgehog": [0.25]},
        # highest softmax accuracy, but Taylor-2 was not run there: settings with all three rows come first
        (1, 4, 32): {"softmax": [1.0], "hedgehog": [1.0]},
        # Hedgehog not run: never chosen
        (1, 2, 16): {"softmax": [1.0], "taylor2": [1.0]},
    }
    assert table.pick_ar_setting(groups) == (4, 16, 32)
    assert table.pick_ar_setting({(1, 4, 32): groups[(1, 4, 32)]}) == (1, 4, 32)
    assert table.pick_ar_setting({(1, 2, 16): groups[(1, 2, 16)]}) is None
