"""Every committed table regenerates byte-identical from the committed (published) records."""

import json
from pathlib import Path

import pytest

from experiments.associative_recall import make_table as ar_table
from experiments.bert_glue import make_table as bert_table
from experiments.gpt2_convert import make_table as convert_table
from experiments.gpt2_wt103 import make_table as wt103_table
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


# every scale with published records (the GPU scale's once the lead has run its sweep)
AR_SCALES = sorted(
    p.name for p in (EXPERIMENTS / "associative_recall" / "records").iterdir() if p.name != "lr_tuning"
)


@pytest.mark.parametrize("scale", AR_SCALES)
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


def test_gpt2_wt103_tables_regenerate_unchanged(tmp_path):
    wt103_table.make_tables("embedded-h200", published_records("gpt2_wt103", "embedded-h200"), tmp_path)
    assert_same_tables(EXPERIMENTS / "gpt2_wt103" / "tables" / "embedded-h200", tmp_path)


def mixer_records(folder: Path, experiment: str, ppl: dict[str, float], task: dict | None = None) -> None:
    """Records of the given rows, made from the committed H200 Hedgehog record (seed 0 at ppl, seed 1 at ppl + 1)."""
    source = json.loads((published_records("gpt2_wt103", "embedded-h200") / "hedgehog-s0.json").read_text())
    folder.mkdir(parents=True)
    for attention, value in ppl.items():
        for seed in (0, 1):
            record = json.loads(json.dumps(source)) | {"attention": attention, "seed": seed}
            record |= {"experiment": experiment, "tags": [experiment], "run_name": f"{attention}-s{seed}"}
            record["metrics"] = {"test/ppl": value + seed}
            if task is not None:
                record["config"]["model"]["pretrained"] = "softmax-s0"
                record["config"]["task"] |= task | ({"distill_steps": 0} if attention != "hedgehog" else {})
            (folder / f"{attention}-s{seed}.json").write_text(json.dumps(record))


def test_gpt2_tables_show_the_mixer_rows_from_their_records(tmp_path):
    """H3, Hyena and Hybrid H3 rows come from records when present: ours beside the published numbers where
    the paper has one (Table 10's 18.5), an empty paper cell where it has none (the from-scratch table)."""
    mixer_records(tmp_path / "wt103", "gpt2_wt103", {"hedgehog": 100.0, "h3": 130.0, "hyena": 110.0})
    wt103_table.make_tables("test", tmp_path / "wt103", tmp_path / "wt103_tables")
    md = (tmp_path / "wt103_tables" / "wt103.md").read_text()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert lines["H3"].startswith("| H3 | 130.50 ± 0.71 (n=2) | s0: 130.00, s1: 131.00 | higher (p ")
    assert lines["H3"].endswith(") |  |")  # no published from-scratch H3 number: the paper cell stays empty
    assert lines["Hyena"].startswith("| Hyena | 110.50 ± 0.71 (n=2) |")
    assert lines["Hybrid H3"] == "| Hybrid H3 | not run |  |  |  |"
    assert "sub-quadratic baselines" in md

    task = {"distill_steps": 200, "finetune_steps": 1000}
    mixer_records(
        tmp_path / "convert", "gpt2_convert", {"hedgehog": 50.0, "h3_hybrid": 55.0, "h3": 60.0}, task
    )
    convert_table.make_tables("test", tmp_path / "convert", tmp_path / "convert_tables")
    md = (tmp_path / "convert_tables" / "table10.md").read_text()
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")
        for line in md.splitlines()
        if line.startswith("| ")
    }
    hybrid = rows["Hybrid H3 (converted)"]
    assert hybrid[1] == "55.50 ± 0.71 (n=2)" and hybrid[-2:] == ["18.5", "+2.7 |"]
    assert rows["Hyena (converted)"][1:3] == ["not run", ""] and rows["Hyena (converted)"][-2] == "18.5"
    assert rows["H3 (converted)"][1] == "60.50 ± 0.71 (n=2)" and rows["H3 (converted)"][-2:] == ["", " |"]
    assert "stage 1 (Hedgehog) 200 steps, stage 2 1000 steps" in md and "not conversions" in md


@pytest.mark.parametrize("module", [vit_table, lra_table], ids=["vit_imagenet", "lra"])
def test_vit_and_lra_tables_regenerate_unchanged(module, tmp_path):
    module.make_tables("embedded", published_records(module.EXPERIMENT, "embedded"), tmp_path)
    assert_same_tables(EXPERIMENTS / module.EXPERIMENT / "tables" / "embedded", tmp_path)
