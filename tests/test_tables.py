"""Every committed table regenerates byte-identical from the committed (published) records."""

import importlib
import json
from pathlib import Path

import pytest

from experiments.gpt2_convert import make_table as convert_table
from experiments.gpt2_wt103 import make_table as wt103_table
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


# every (experiment, scale) with committed tables; the efficiency tables come from benchmark records
# (experiments/efficiency, tested in test_bench.py)
COMMITTED = sorted(
    (tables.parent.parent.name, tables.name)
    for tables in EXPERIMENTS.glob("*/tables/*")
    if tables.is_dir() and tables.parent.parent.name != "efficiency" and any(tables.glob("*.md"))
)


@pytest.mark.parametrize(("experiment", "scale"), COMMITTED, ids=["/".join(c) for c in COMMITTED])
def test_every_committed_table_regenerates_unchanged(experiment, scale, tmp_path):
    """Through each make_table's command line, as `make tables` runs it, from the published records."""
    module = importlib.import_module(f"experiments.{experiment}.make_table")
    module.main(["--scale", scale, "--out", str(tmp_path)])
    assert_same_tables(EXPERIMENTS / experiment / "tables" / scale, tmp_path)


def test_every_reproduced_experiment_has_committed_embedded_tables():
    """Every experiment `make reproduce` runs (the Makefile's EXPERIMENTS) has its embedded tables committed."""
    makefile = (project_root() / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("EXPERIMENTS :="))
    experiments = line.split(":=")[1].split()
    assert len(experiments) >= 7
    for experiment in experiments:
        assert (experiment, "embedded") in COMMITTED, experiment


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


def test_table10_names_the_pretrained_model_the_same_from_any_checkout():
    """Records keep the absolute path of the embedded pretrained GPT-2; the table shows it relative to the
    project, so the committed table regenerates unchanged in a checkout at another path (as CI's)."""
    here = project_root() / "outputs" / "gpt2_wt103" / "pretrained" / "embedded" / "softmax-s0"
    elsewhere = Path("/elsewhere/checkout/outputs/gpt2_wt103/pretrained/embedded/softmax-s0")
    expected = "outputs/gpt2_wt103/pretrained/embedded/softmax-s0"
    assert convert_table.model_name(str(here)) == expected
    assert convert_table.model_name(str(elsewhere)) == expected
    assert convert_table.model_name("gpt2") == "gpt2"
