"""The Long Range Arena table (trained from scratch; test accuracy % per task and the average) and its curves.

Reads the published records of experiment lra (experiments/lra/records/<scale>/, tag ``lra``) and writes to
experiments/lra/tables/<scale>/:
  lra.{md,tex}        test accuracy per row and task (mean ± std over seeds, n; per seed), the average
                      over the tasks run, each linear row against Hedgehog by our rule, the majority-class
                      rate of each task's test split, and the published LRA average of the row
  lra_paper.{md,tex}  the published rows (LRA leaderboard; Hedgehog's average unconfirmed)
  curves-<task>.png   training loss against steps, one line per row

    python -m experiments.lra.make_table --scale embedded
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from hedgehog.results import (
    DIFFERENCE_RULE,
    attention_label,
    compare_seeds,
    mean_spread,
    paper_results,
    plot_histories,
    records_with,
    table_main,
    write_tables,
)

HERE = Path(__file__).resolve().parent
EXPERIMENT = "lra"
METRIC = "test/accuracy"
ROWS = ("softmax", "hedgehog", "elu1", "performer", "cosformer")
# LRA's tasks in the leaderboard's order; smnist (sequential MNIST) is the embedded image task
TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "smnist")
TASK_LABELS = {
    "listops": "ListOps",
    "text": "Text",
    "retrieval": "Retrieval",
    "image": "Image",
    "pathfinder": "Pathfinder",
    "smnist": "sMNIST (image task)",
}
# our rows whose feature map a published leaderboard row uses
PAPER_ROWS = {"elu1": "linear_transformer", "performer": "performer", "hedgehog": "hedgehog"}
PAPER_LABELS = {
    "linear_transformer": "Linear Transformer (1 + ELU)",
    "performer": "Performer",
    "reformer": "Reformer",
    "hedgehog": "Hedgehog",
}
PAPER_COLUMNS = ("listops", "text", "retrieval", "image", "pathfinder", "avg")


def published_cell(row: dict[str, Any] | None, column: str) -> str:
    if not row or column not in row:
        return ""
    mark = " (unconfirmed)" if row.get("provenance") == "unconfirmed" else ""
    return f"{row[column]:.2f}{mark}"


def make_tables(scale: str, records_dir: Path, out: Path) -> str:
    """The tables and curves from the records in records_dir, into out; returns the markdown."""
    records = records_with(records_dir, EXPERIMENT, METRIC, scale)
    accuracy: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    by_task: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    majority: dict[str, float] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        task = r["config"]["data"]["task"]
        accuracy[(r["attention"], task)][r["seed"]] = r["metrics"][METRIC]
        by_task[task][r["attention"]].append(r)
        if "test_majority" in r.get("data", {}):
            majority[task] = 100.0 * r["data"]["test_majority"]
    tasks = [t for t in TASKS if t in by_task]
    rows_run = [a for a in ROWS if any((a, t) in accuracy for t in tasks)]
    rows_run += sorted({a for a, _ in accuracy} - set(ROWS))
    published = paper_results("long_range_arena")["rows"]

    def values(attention: str, task: str) -> list[float]:
        return list(accuracy.get((attention, task), {}).values())

    rows = []
    for name in rows_run:
        cells = []
        for task in tasks:
            seeds = accuracy.get((name, task), {})
            cells.append(
                f"{mean_spread(list(seeds.values()))} [{', '.join(f's{s}: {v:.1f}' for s, v in seeds.items())}]"
                if seeds
                else "not run"
            )
        complete = all(values(name, t) for t in tasks)
        average = (
            f"{statistics.mean(statistics.mean(values(name, t)) for t in tasks):.1f}" if complete else ""
        )
        versus = (
            ""
            if name in ("softmax", "hedgehog")
            else "; ".join(
                f"{TASK_LABELS[t]}: {compare_seeds(values(name, t), values('hedgehog', t))}"
                for t in tasks
                if values(name, t)
            )
        )
        paper_row = published.get(PAPER_ROWS.get(name, ""))
        rows.append(
            [
                "softmax (Transformer)" if name == "softmax" else attention_label(name),
                *cells,
                average,
                versus,
                published_cell(paper_row, "avg"),
            ]
        )
    rows.append(
        [
            "majority class (test)",
            *(f"{majority[t]:.1f}" if t in majority else "" for t in tasks),
            f"{statistics.mean(majority[t] for t in tasks):.1f}" if all(t in majority for t in tasks) else "",
            "",
            "",
        ]
    )
    config = records[0]["config"]
    sizes = []
    for task in tasks:
        c = next(iter(by_task[task].values()))[0]["config"]
        model, data = c["model"], c["data"]
        mean_tokens = next(iter(by_task[task].values()))[0].get("data", {}).get("mean_tokens", {}).get("test")
        sizes.append(
            f"{TASK_LABELS[task]}: {model['num_layers']} layer(s) of width {model['d_model']}, {model['num_heads']} "
            f"heads, sequences padded to {data['max_length']} tokens"
            + (f" ({mean_tokens:.0f} real on average)" if mean_tokens else "")
            + f", batch {data['batch_size']}, {c['task']['finetune_steps']} steps at lr {c['task']['optimizer']['lr']:g}"
        )
    hardware = sorted({r["hardware"] for r in records})
    wall = sum(r["wall_time_s"] for r in records)
    caption = (
        f"Long Range Arena, trained from scratch ({scale} scale): test accuracy (%), mean ± std over seeds (n) "
        f"[per seed]. The model: a bidirectional Transformer with the row's attention, mean pooling over real "
        f"tokens. {'; '.join(sizes)}. Average: over the tasks run (the paper's average is over its five tasks). "
        f"'vs Hedgehog': {DIFFERENCE_RULE}. The paper's claim: Hedgehog is the best linear attention on LRA. "
        f"{len(records)} runs, {wall / 60:.1f} min of training and testing in all, on {', '.join(hardware)}."
    )
    md = write_tables(
        out,
        "lra",
        [
            "attention",
            *(f"ours: {TASK_LABELS[t]}" for t in tasks),
            "ours: average",
            "ours: vs Hedgehog",
            "paper: LRA average (its row)",
        ],
        rows,
        caption,
    )
    paper_rows = [
        [PAPER_LABELS[key], *(published_cell(row, c) for c in PAPER_COLUMNS)]
        for key, row in published.items()
    ]
    md_paper = write_tables(
        out,
        "lra_paper",
        ["published (LRA leaderboard)", *(TASK_LABELS.get(c, "average") for c in PAPER_COLUMNS)],
        paper_rows,
        "Long Range Arena as published: the LRA leaderboard rows (accuracy %; the Transformer row is not in "
        "experiments/paper_results.yaml) and Hedgehog's average, which we could not confirm from a stored copy "
        f"of the paper. Ours runs {config['experiment_name']} with the project's sizes (caption above).",
    )
    for task in tasks:
        plot_histories(
            {
                "softmax" if n == "softmax" else attention_label(n): by_task[task][n]
                for n in rows_run
                if n in by_task[task]
            },
            [("train/finetune_loss", "training loss (cross-entropy)")],
            out / f"curves-{task}.png",
            f"LRA {TASK_LABELS[task]} from scratch ({scale} scale)",
        )
    return md + "\n" + md_paper


def main(argv: list[str] | None = None) -> None:
    table_main(argv, doc=__doc__, experiment=EXPERIMENT, make_tables=make_tables)


if __name__ == "__main__":
    main()
