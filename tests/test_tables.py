"""Every committed table regenerates byte-identical from the committed (published) records."""

from pathlib import Path

import pytest

from experiments.associative_recall import make_table as ar_table
from experiments.bert_glue import make_table as bert_table
from experiments.lra import make_table as lra_table
from experiments.vit_imagenet import make_table as vit_table
from hedgehog.paths import project_root
from hedgehog.results import published_records

EXPERIMENTS = project_root() / "experiments"


def assert_same_tables(committed: Path, regenerated: Path) -> None:
    names = sorted(p.name for p in committed.iterdir() if p.suffix in (".md", ".tex"))
    assert names, f"no committed tables in {committed}"
    assert sorted(p.name for p in regenerated.iterdir() if p.suffix in (".md", ".tex")) == names
    for name in names:
        assert (regenerated / name).read_text() == (committed / name).read_text(), (
            f"{committed / name} differs from what make_table writes from the committed records; "
            "regenerate it (make tables) and commit it"
        )


@pytest.mark.parametrize("scale", ["embedded", "paper"])
def test_associative_recall_tables_regenerate_unchanged(scale, tmp_path):
    ar_table.make_tables(scale, EXPERIMENTS / "associative_recall" / "records", tmp_path)
    assert_same_tables(EXPERIMENTS / "associative_recall" / "tables" / scale, tmp_path)


def test_bert_glue_tables_regenerate_unchanged(tmp_path):
    bert_table.make_tables(
        "embedded",
        published_records("bert_glue", "embedded"),
        published_records("associative_recall", "embedded"),
        tmp_path,
    )
    assert_same_tables(EXPERIMENTS / "bert_glue" / "tables" / "embedded", tmp_path)


@pytest.mark.parametrize("module", [vit_table, lra_table], ids=["vit_imagenet", "lra"])
def test_vit_and_lra_tables_regenerate_unchanged(module, tmp_path):
    module.make_tables("embedded", published_records(module.EXPERIMENT, "embedded"), tmp_path)
    assert_same_tables(EXPERIMENTS / module.EXPERIMENT / "tables" / "embedded", tmp_path)
