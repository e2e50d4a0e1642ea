"""Summarisation for causal-LM finetuning (paper Table 11): a prompt, then the summary the model learns to write.

Datasets (``dataset``):

- ``aclsum`` (embedded default): ACLSum, 250 ACL papers in its official splits train/val/test
  100/50/100, from the PyPI package ``aclsum==0.1.2`` (installed with ``--no-deps``; its
  ``dataset/{train,val,test}.jsonl`` are read directly). Input: the paper's abstract (the field
  ``sentences.abstract``, a list of sentences in PTB-style tokens such as ``paper , we``, joined and
  detokenised). Target: the paper's three one-sentence summaries (``summary.challenge``,
  ``summary.approach``, ``summary.outcome``) joined in that order into one three-sentence summary,
  the single reference. The three describe different aspects of the paper rather than rewording
  one summary, so each alone is not a summary of the paper, and scoring against the best of the
  three would reward covering a single aspect.
- ``samsum`` (paper scale): SAMSum (14,732 / 818 / 819 dialogues in train/validation/test; columns
  ``id``, ``dialogue``, ``summary``) through ``datasets`` from the hub id ``samsum_hub_id``. The
  default is ``knkarthick/samsum``, a parquet copy: the original ``Samsung/samsum`` repository has
  left the hub and was script-based, which ``datasets`` 4 and later refuse.
- the path of a local folder: files ``train``, ``validation`` (or ``val``) and ``test`` with suffix
  ``.jsonl``, ``.json`` or ``.parquet``, in SAMSum's schema (``id``, ``dialogue``, ``summary``) or
  the generic one (``input``, ``target``; a target may be a list of texts: several references).

Examples with several references train once per reference and are scored against all of them
(ROUGE keeps the best: ``hedgehog.tasks.metrics.rouge``). ``num_train``/``num_val``/``num_test``
cap the examples of a split by a sample fixed by the split's name (not the run seed).

Formatting: the prompt is ``prompt_template`` with ``{input}`` filled, tokenised with the
tokenizer's special tokens (a BOS where the tokenizer adds one); the target follows as a space and
the summary, and ends with the EOS token. With ``chat_template`` the filled template is the user turn
of the tokenizer's chat template with the assistant turn opened (for instruct models such as
SmolLM2-Instruct), and the summary follows as is. Inputs longer than ``max_input_tokens`` tokens
are cut to that many; targets (with the EOS) to ``max_target_tokens``.

Batches: training (``train_dataloader``, resumable mid-epoch; ``val_dataloader``: the same for the
validation loss) are right-padded ``input_ids``, ``attention_mask`` and ``labels`` (the target's
tokens; ``IGNORE_INDEX`` on the prompt and padding). Generation (``test_dataloader``, or
``generation_dataloader(split)``) batches are left-padded prompts (``input_ids``,
``attention_mask``) with their ``references`` (a list of texts per example) and ``ids``, for
``model.generate`` and ROUGE.
"""

from __future__ import annotations

import functools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from hedgehog.data.loading import IGNORE_INDEX, ResumableLoader
from hedgehog.paths import pypi_package_dir

SPLITS = ("train", "val", "test")
DEFAULT_PROMPT = "Summarize the following text.\n\n{input}\n\nSummary:"
ACLSUM_ASPECTS = ("challenge", "approach", "outcome")
SAMSUM_HUB_ID = "knkarthick/samsum"
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
# the split's file names in a local folder and its name on the hub
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val"), "test": ("test",)}


@dataclass(frozen=True)
class Example:
    """One text to summarise and its reference summaries."""

    id: str
    input: str
    references: tuple[str, ...]


def detokenize_ptb(text: str) -> str:
    """Undo PTB-style spacing (``paper , we`` -> ``paper, we``; ``( QA )`` -> ``(QA)``; ``20 %`` -> ``20%``)."""
    text = re.sub(r" ([,.;:?!%)\]])", r"\1", text)
    text = re.sub(r"([(\[]) ", r"\1", text)
    return re.sub(r" ('s|n't)\b", r"\1", text)


def aclsum_examples(split: str) -> list[Example]:
    """The papers of one ACLSum split: abstract -> its challenge, approach and outcome summaries joined."""
    root = pypi_package_dir("aclsum", "pip install --no-deps aclsum==0.1.2") / "dataset"
    path = root / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"ACLSum split file {path} not found; reinstall aclsum==0.1.2")
    examples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        abstract = detokenize_ptb(" ".join(row["sentences"]["abstract"]))
        summary = " ".join(row["summary"][aspect].strip() for aspect in ACLSUM_ASPECTS)
        examples.append(Example(row["id"], abstract, (summary,)))
    return examples


def _rows_to_examples(rows: list[dict[str, Any]], where: str) -> list[Example]:
    """Rows in SAMSum's schema (id, dialogue, summary) or the generic one (input, target)."""
    if not rows:
        raise ValueError(f"{where} holds no rows")
    columns = set(rows[0])
    if {"dialogue", "summary"} <= columns:
        inputs, targets = "dialogue", "summary"
    elif {"input", "target"} <= columns:
        inputs, targets = "input", "target"
    else:
        raise ValueError(
            f"{where} has columns {sorted(columns)}; expected SAMSum's (id, dialogue, summary) or "
            "input and target (a text or a list of texts)"
        )
    examples = []
    for i, row in enumerate(rows):
        target = row[targets]
        references = (target,) if isinstance(target, str) else tuple(target)
        if not references or not all(isinstance(r, str) and r.strip() for r in references):
            raise ValueError(f"{where} row {i} has no reference summary (column {targets!r}: {target!r})")
        text = row[inputs]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where} row {i} has nothing to summarise (column {inputs!r}: {text!r})")
        examples.append(Example(str(row.get("id", i)), text.strip(), tuple(r.strip() for r in references)))
    return examples


def local_examples(folder: str | Path, split: str) -> list[Example]:
    """One split of a local folder of train/validation/test files (.jsonl, .json or .parquet)."""
    from datasets import load_dataset

    folder = Path(folder)
    found = [
        folder / f"{n}{s}"
        for n in SPLIT_NAMES[split]
        for s in LOCAL_SUFFIXES
        if (folder / f"{n}{s}").is_file()
    ]
    if not found:
        names = "|".join(SPLIT_NAMES[split])
        raise FileNotFoundError(
            f"no {split} file in {folder}: expected ({names})(.jsonl|.json|.parquet) with columns id, dialogue, "
            "summary (SAMSum) or input, target"
        )
    builder = "parquet" if found[0].suffix == ".parquet" else "json"
    table = load_dataset(builder, data_files={"rows": str(found[0])})["rows"]
    return _rows_to_examples([dict(r) for r in table], str(found[0]))


def samsum_examples(split: str, hub_id: str = SAMSUM_HUB_ID) -> list[Example]:
    """One split of SAMSum from the hub (``hub_id``), through ``datasets``."""
    from datasets import load_dataset

    table = load_dataset(hub_id, split=SPLIT_NAMES[split][0])
    return _rows_to_examples([dict(r) for r in table], f"{hub_id} {SPLIT_NAMES[split][0]}")


def load_examples(dataset: str, split: str, samsum_hub_id: str = SAMSUM_HUB_ID) -> list[Example]:
    """The examples of one split of ``aclsum``, ``samsum`` or a local folder."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if dataset == "aclsum":
        return aclsum_examples(split)
    if dataset == "samsum":
        return samsum_examples(split, samsum_hub_id)
    if Path(dataset).is_dir():
        return local_examples(dataset, split)
    raise ValueError(
        f"unknown summarisation dataset {dataset!r}: use aclsum, samsum or the path of a folder of "
        "train/validation/test files"
    )


class TrainingPairs(Dataset):
    """Prompt + target token ids; a tensor of indices gives a right-padded batch (for ``ResumableLoader``)."""

    def __init__(self, prompts: list[list[int]], targets: list[list[int]], pad_id: int) -> None:
        self.prompts, self.targets, self.pad_id = prompts, targets, pad_id

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = [int(i) for i in torch.as_tensor(index).reshape(-1)]
        length = max(len(self.prompts[i]) + len(self.targets[i]) for i in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for b, i in enumerate(rows):
            prompt, target = self.prompts[i], self.targets[i]
            n = len(prompt) + len(target)
            input_ids[b, :n] = torch.tensor(prompt + target)
            labels[b, len(prompt) : n] = torch.tensor(target)
            attention_mask[b, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class Prompts(Dataset):
    """Prompt token ids with the example's id and references, one example per item."""

    def __init__(self, prompts: list[list[int]], examples: list[Example]) -> None:
        self.prompts, self.examples = prompts, examples

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> tuple[list[int], Example]:
        return self.prompts[index], self.examples[index]


def left_padded(items: list[tuple[list[int], Example]], pad_id: int) -> dict[str, Any]:
    """A generation batch: prompts left-padded (generated tokens then follow every prompt directly)."""
    length = max(len(prompt) for prompt, _ in items)
    input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), length), dtype=torch.long)
    for b, (prompt, _) in enumerate(items):
        input_ids[b, length - len(prompt) :] = torch.tensor(prompt)
        attention_mask[b, length - len(prompt) :] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "references": [list(example.references) for _, example in items],
        "ids": [example.id for _, example in items],
    }


class SummarizationDataModule(pl.LightningDataModule):
    """Summarisation examples formatted for a causal LM's tokenizer (module docstring: datasets, format).

    ``tokenizer`` is a Hugging Face tokenizer with an EOS token (the pad token defaults to it).
    """

    def __init__(
        self,
        tokenizer: Any,
        dataset: str = "aclsum",
        prompt_template: str = DEFAULT_PROMPT,
        chat_template: bool = False,
        max_input_tokens: int = 512,
        max_target_tokens: int = 160,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        num_train: int | None = None,
        num_val: int | None = None,
        num_test: int | None = None,
        samsum_hub_id: str = SAMSUM_HUB_ID,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if "{input}" not in prompt_template:
            raise ValueError(f"prompt_template must contain {{input}}, got {prompt_template!r}")
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"{type(tokenizer).__name__} has no EOS token; summaries must end with one so the model learns to stop"
            )
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "chat_template=True but the tokenizer has no chat template; use a plain prompt_template"
            )
        self.tokenizer, self.dataset, self.prompt_template = tokenizer, dataset, prompt_template
        self.chat_template = chat_template
        self.max_input_tokens, self.max_target_tokens = max_input_tokens, max_target_tokens
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        self.caps = {"train": num_train, "val": num_val, "test": num_test}
        self.samsum_hub_id = samsum_hub_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.examples: dict[str, list[Example]] = {}

    def check_model_vocab(self, model_vocab_size: int) -> None:
        """Raise unless a model with ``model_vocab_size`` embeddings covers every id of the tokenizer."""
        if model_vocab_size < len(self.tokenizer):
            raise ValueError(
                f"the tokenizer has {len(self.tokenizer)} tokens but the model's vocabulary is {model_vocab_size}: "
                "token ids would index past its embedding; use the model's own tokenizer (data.tokenizer) or "
                "a model config with at least that vocab_size"
            )

    def prompt_ids(self, inputs: list[str]) -> list[list[int]]:
        """Token ids of the prompts for these inputs (each input cut to ``max_input_tokens`` tokens)."""
        tok = self.tokenizer
        cut = [
            tok.decode(ids[: self.max_input_tokens]) if len(ids) > self.max_input_tokens else text
            for text, ids in zip(inputs, tok(inputs, add_special_tokens=False)["input_ids"], strict=True)
        ]
        texts = [self.prompt_template.format(input=text) for text in cut]
        if not self.chat_template:
            return tok(texts, add_special_tokens=True)["input_ids"]
        chats = [
            tok.apply_chat_template(
                [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
            )
            for t in texts
        ]
        return tok(chats, add_special_tokens=False)["input_ids"]

    def target_ids(self, summaries: list[str]) -> list[list[int]]:
        """Token ids of the targets: the summary (after a space, without the chat template), then EOS."""
        texts = summaries if self.chat_template else [" " + s for s in summaries]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [[*t, self.tokenizer.eos_token_id][: self.max_target_tokens] for t in ids]

    def setup(self, stage: str | None = None) -> None:
        if self.examples:
            return
        for split in SPLITS:
            examples = load_examples(self.dataset, split, self.samsum_hub_id)
            cap = self.caps[split]
            if cap is not None and len(examples) > cap:
                examples = random.Random(f"{self.dataset}-{split}").sample(examples, cap)
            self.examples[split] = examples

    def training_pairs(self, split: str) -> TrainingPairs:
        """Prompt + target of every (example, reference) pair of a split."""
        pairs = [(e, r) for e in self.examples[split] for r in e.references]
        prompts = self.prompt_ids([e.input for e, _ in pairs])
        return TrainingPairs(prompts, self.target_ids([r for _, r in pairs]), self.pad_id)

    def train_dataloader(self) -> ResumableLoader:
        loader = ResumableLoader(self.training_pairs("train"), self.batch_size, self.seed)
        trainer = self.trainer
        if trainer is not None:
            loader.batches_done = lambda: trainer.global_step * trainer.accumulate_grad_batches
            loader.rank, loader.world_size = trainer.global_rank, trainer.world_size
        return loader

    def labelled_dataloader(self, split: str) -> DataLoader:
        """Training-format batches of a split in a fixed order (the validation loss)."""
        pairs = self.training_pairs(split)
        batches = BatchSampler(SequentialSampler(pairs), self.eval_batch_size, drop_last=False)
        return DataLoader(pairs, sampler=batches, batch_size=None)

    def generation_dataloader(self, split: str) -> DataLoader:
        """Left-padded prompt batches of a split with their references, in a fixed order."""
        examples = self.examples[split]
        prompts = Prompts(self.prompt_ids([e.input for e in examples]), examples)
        return DataLoader(
            prompts,
            batch_size=self.eval_batch_size,
            collate_fn=functools.partial(left_padded, pad_id=self.pad_id),
        )

    def val_dataloader(self) -> DataLoader:
        return self.labelled_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.generation_dataloader("test")
