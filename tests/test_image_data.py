"""Image data for the ViT experiment: ImageNet-schema parquet through the paper preprocessing, and MNIST."""

import numpy as np
import pytest
import torch
from PIL import Image

from hedgehog.data.images import (
    ImageClassificationDataModule,
    Preprocess,
    mnist_digits,
    pil_to_tensor,
    random_resized_crop,
    resize,
    resize_shorter,
)
from hedgehog.paths import project_root


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEDGEHOG_CACHE", str(tmp_path / "cache"))


def write_imagenet(folder, images_by_split):
    """Parquet files in ImageNet-1k's hub schema (``image`` as bytes + path, ``label``) and layout."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=1000)})
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in images_by_split.items():
        table = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        table.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))


def constant(colour, size=(300, 400), mode="RGB"):
    return Image.new(mode, size, colour)


def paper_module(folder, **overrides):
    settings = dict(
        dataset="imagenet", data_dir=str(folder), image_size=224, resize_size=256, channels=3,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), eval_batch_size=4,
    )  # fmt: skip
    return ImageClassificationDataModule(**{**settings, **overrides})


def test_imagenet_parquet_gives_normalised_224_crops(tmp_path):
    colours = [(10, 128, 250), (255, 0, 0), (0, 0, 0)]
    halves = np.zeros((256, 512, 3), np.uint8)  # H x W: red left half, blue right half
    halves[:, :256, 0] = 255
    halves[:, 256:, 2] = 255
    val = [constant(c) for c in colours] + [constant(77, (200, 500), "L"), Image.fromarray(halves)]
    write_imagenet(tmp_path, {"train": (val[:3], [1, 2, 3]), "validation": (val, [5, 6, 7, 8, 9])})
    dm = paper_module(tmp_path, threads=2)
    dm.setup()
    assert (dm.num_labels, dm.image_size, dm.channels) == (1000, 224, 3)
    batches = list(dm.val_dataloader())
    assert [b["pixel_values"].shape for b in batches] == [(4, 3, 224, 224), (1, 3, 224, 224)]
    pixels = torch.cat([b["pixel_values"] for b in batches])
    assert torch.cat([b["labels"] for b in batches]).tolist() == [5, 6, 7, 8, 9]
    for image, colour in zip(pixels, [*colours, (77, 77, 77)], strict=False):
        expected = (torch.tensor(colour, dtype=torch.float32) / 255 - 0.5) / 0.5
        assert torch.allclose(image, expected.view(3, 1, 1).expand_as(image), atol=1e-5)
    # 256x512 is already 256 on its short side: the crop is columns 144..367, the edge at column 112
    red, blue = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1), torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1)
    assert torch.equal(pixels[4][:, :, :112], red.expand(3, 224, 112))
    assert torch.equal(pixels[4][:, :, 112:], blue.expand(3, 224, 112))
    assert torch.equal(dm.splits["test"][[0]]["pixel_values"], pixels[:1])


def test_resize_matches_pil_bilinear():
    rng = np.random.default_rng(0)
    for shape, short in (((100, 150, 3), 64), ((180, 120, 3), 256)):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        ours = resize_shorter(pil_to_tensor(image), short)
        h, w = ours.shape[-2:]
        assert min(h, w) == short
        reference = np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.float32)
        assert (
            ours - torch.from_numpy(reference).permute(2, 0, 1)
        ).abs().max() <= 1.01  # PIL rounds to uint8


def test_training_augmentation_is_seeded(tmp_path):
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)) for _ in range(8)]
    write_imagenet(tmp_path, {"train": (images, list(range(8))), "validation": (images[:2], [0, 1])})
    batches = []
    for _ in range(2):
        dm = paper_module(tmp_path, augment=True, batch_size=4, seed=7)
        dm.setup()
        batches.append(next(iter(dm.train_dataloader())))
    assert batches[0]["pixel_values"].shape == (4, 3, 224, 224)
    assert torch.equal(batches[0]["pixel_values"], batches[1]["pixel_values"])
    other = paper_module(tmp_path, augment=True, batch_size=4, seed=8)
    other.setup()
    plain = paper_module(tmp_path, batch_size=4, seed=7)
    plain.setup()
    rows = batches[0]["labels"].tolist()
    assert not torch.equal(other.splits["train"][rows]["pixel_values"], batches[0]["pixel_values"])
    assert not torch.equal(plain.splits["train"][rows]["pixel_values"], batches[0]["pixel_values"])
    assert batches[0]["pixel_values"].min() >= -1 and batches[0]["pixel_values"].max() <= 1


def test_random_resized_crop_geometry():
    image = torch.randint(0, 256, (3, 50, 50), dtype=torch.uint8)
    whole = torch.tensor([[1.0 - 1e-9, 0.5, 0.0, 0.0]])  # all of the area, aspect exp(0) = 1
    assert torch.allclose(random_resized_crop(image, 32, whole), resize(image, 32, 32))
    # a 200x20 image fits no window of aspect >= 3/4 and full area: the centre crop clipped to 3/4
    tall = torch.randint(0, 256, (3, 200, 20), dtype=torch.uint8)
    too_wide = torch.tensor([[1.0 - 1e-9, 0.0, 0.0, 0.0]]).repeat(10, 1)
    assert torch.equal(random_resized_crop(tall, 16, too_wide), resize(tall[:, 86:113], 16, 16))
    draws = torch.cat([whole.repeat(10, 1).flatten(), torch.zeros(1)])  # whole image, then flip
    flipped = Preprocess(image_size=50, channels=3)(image, draws)
    assert torch.allclose(flipped, Preprocess(image_size=50, resize_size=None)(image).flip(-1))


def test_mnist_shapes_labels_and_fixed_split():
    dm = ImageClassificationDataModule(dataset="mnist", image_size=32, fit="pad", channels=1, batch_size=16)
    dm.setup()
    assert {s: len(d) for s, d in dm.splits.items()} == {"train": 8000, "val": 1000, "test": 1000}
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (16, 1, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert torch.equal(
        batch["pixel_values"][:, :, :2], torch.full((16, 1, 2, 32), -1.0)
    )  # the black pad border
    images, labels = mnist_digits()
    assert images.shape == (10000, 28, 28) and torch.bincount(labels).sum() == 10000
    rows = torch.cat([d.rows for d in dm.splits.values()])
    assert sorted(rows.tolist()) == list(range(10000))
    first = dm.splits["val"][[0]]
    row = dm.splits["val"].rows[0]
    assert first["labels"].item() == labels[row]
    assert torch.allclose(first["pixel_values"][0, 0, 2:30, 2:30], images[row].float() / 255 * 2 - 1)
    again = ImageClassificationDataModule(dataset="mnist", seed=3)
    again.setup()
    assert torch.equal(again.splits["test"].rows, dm.splits["test"].rows)


def test_mnist_in_three_channels_resized():
    dm = ImageClassificationDataModule(
        dataset="mnist", image_size=48, fit="resize", channels=3, mean=(0.5,) * 3, std=(0.5,) * 3, num_val=10
    )
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixel_values"].shape == (10, 3, 48, 48)
    assert torch.equal(batch["pixel_values"][:, 0], batch["pixel_values"][:, 2])
    assert (dm.channels, dm.image_size, dm.num_labels) == (3, 48, 10)


def test_sklearn_digits():
    dm = ImageClassificationDataModule(dataset="digits", image_size=8, fit="pad", eval_batch_size=500)
    dm.setup()
    assert {s: len(d) for s, d in dm.splits.items()} == {"train": 1437, "val": 179, "test": 181}
    batch = next(iter(dm.test_dataloader()))
    assert batch["pixel_values"].shape == (181, 1, 8, 8) and set(batch["labels"].tolist()) == set(range(10))


def test_bad_settings_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="one per channel"):
        Preprocess(channels=3, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="channels=3"):
        ImageClassificationDataModule(dataset="imagenet", channels=1)
    with pytest.raises(ValueError, match="cannot pad"):
        Preprocess(image_size=16, resize_size=None, fit="pad", channels=1, mean=(0.5,), std=(0.5,))(
            torch.zeros(1, 28, 28, dtype=torch.uint8)
        )
    with pytest.raises(FileNotFoundError, match="validation"):
        write_imagenet(tmp_path, {"train": ([constant(0)], [0])})
        paper_module(tmp_path).setup()


def test_config_instantiates_the_datamodule():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(project_root() / "conf" / "data" / "image_classification.yaml")
    cfg.seed = 0
    dm = instantiate(cfg)
    dm.setup()
    assert isinstance(dm, ImageClassificationDataModule) and dm.dataset == "mnist"
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (cfg.batch_size, cfg.channels, cfg.image_size, cfg.image_size)
