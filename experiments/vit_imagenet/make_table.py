"""The ImageNet table (ViT finetuned conversion; top-1 %) and its training curves, from the run records.

Reads the published records of experiment vit_imagenet (experiments/vit_imagenet/records/<scale>/, tag
``vit_imagenet``: the softmax teacher runs (tag ``teacher``), the conversions and the softmax control) and
writes to experiments/vit_imagenet/tables/<scale>/:
  imagenet.{md,tex}  test top-1 per row (mean ± std over seeds, n, per seed), % of the teacher, the
                     differences our rule establishes, beside the paper's ViT-B/16 numbers
  curves.png         training losses: stage 1 (distillation) and stage 2 (the task), one line per row

    python -m experiments.vit_imagenet.make_table --scale embedded
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
EXPERIMENT = "vit_imagenet"
METRIC = "test/accuracy"
# the rows: the teacher (the paper's softmax row), the paper's conversions, then the rows we add for
# context: the teacher finetuned by the same stage 2 without conversion (softmax), 1+ELU, Taylor-2
ROWS = ("teacher", "t2r_hh", "hedgehog", "softmax", "elu1", "taylor2")
PAPER_ROWS = {"teacher": "softmax", "t2r_hh": "t2r_hh", "hedgehog": "hedgehog"}


def row_of(record: dict[str, Any]) -> str:
    """A record's row: the teacher runs carry the tag ``teacher``; the others are rows by attention."""
    return "teacher" if "teacher" in record["tags"] else record["attention"]


def row_label(row: str) -> str:
    if row == "teacher":
        return "softmax ViT (the teacher)"
    if row == "softmax":
        return "softmax, finetuned as the conversions (control)"
    if row == "t2r_hh":
        return f"{attention_label(row)} (T2R map, Hedgehog's distillation)"
    return attention_label(row)


def fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def make_tables(scale: str, records_dir: Path, out: Path) -> str:
    """The table and the curves from the records in records_dir, into out; returns the markdown."""
    records = records_with(records_dir, EXPERIMENT, METRIC, scale)
    top1: dict[str, dict[int, float]] = defaultdict(dict)
    by_row: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["seed"]):
        top1[row_of(r)][r["seed"]] = r["metrics"][METRIC]
        by_row[row_of(r)].append(r)
    published = paper_results("vit_imagenet_finetuned_conversion")["rows"]
    teacher = list(top1.get("teacher", {}).values())
    control = list(top1.get("softmax", {}).values())
    hedgehog = list(top1.get("hedgehog", {}).values())
    rows = []
    for name in (*ROWS, *sorted(set(top1) - set(ROWS))):
        values = list(top1.get(name, {}).values())
        # % of the teacher per seed of the row, over the mean of the teacher's seeds
        share = [100.0 * v / statistics.mean(teacher) for v in values] if values and teacher else []
        paper = published.get(PAPER_ROWS.get(name, ""))
        rows.append(
            [
                row_label(name),
                mean_spread(values) or "not run",
                ", ".join(f"s{s}: {v:.1f}" for s, v in top1.get(name, {}).items()),
                mean_spread(share),
                "" if name == "teacher" or not values else compare_seeds(values, teacher),
                "" if name in ("teacher", "softmax") or not values else compare_seeds(values, control),
                "" if name == "hedgehog" or not values else compare_seeds(values, hedgehog),
                fmt(paper),
                fmt(None if paper is None else 100.0 * paper / published["softmax"]),
            ]
        )
    config = next((r for r in records if row_of(r) != "teacher"), records[0])["config"]
    teacher_config = next((r for r in records if row_of(r) == "teacher"), records[0])["config"]
    vit, data, task = config["model"], config["data"], config["task"]
    if vit["pretrained"] is not None:
        model = f"{vit['pretrained']} ({data['image_size']}px)"
    else:
        c = vit["config"]
        model = (
            f"a ViT trained from scratch with softmax ({c['num_hidden_layers']} layers, width {c['hidden_size']}, "
            f"{c['num_attention_heads']} heads, {c['image_size']}px images in {c['patch_size']}px patches, "
            f"{teacher_config['task']['finetune_steps']} steps)"
        )
    hardware = sorted({r["hardware"] for r in records})
    wall = sum(r["wall_time_s"] for r in records)
    caption = (
        f"ImageNet table, finetuned conversion of a ViT ({scale} scale): test top-1 (%), mean ± std over seeds (n). "
        f"Ours: {model} on {data['dataset']}, converted per row and seed from the softmax ViT of the same seed; "
        f"stage 1 (trainable maps: Hedgehog, T2R-HH) {task['distill_steps']} steps, stage 2 {task['finetune_steps']} "
        f"steps of batch {data['batch_size']}; the control is the teacher given the same stage 2 without conversion. "
        f"% of the teacher: each seed of the row over the mean of the teacher's seeds. 'vs' columns: "
        f"{DIFFERENCE_RULE}. The paper's claim (ViT-B/16 on ImageNet-1k): Hedgehog keeps "
        f"{100.0 * published['hedgehog'] / published['softmax']:.1f}% of softmax's top-1 and beats T2R-HH. "
        f"{len(records)} runs, {wall / 60:.1f} min of training and testing in all, on {', '.join(hardware)}."
    )
    md = write_tables(
        out,
        "imagenet",
        [
            "model",
            "ours: top-1",
            "ours: per seed",
            "ours: % of the teacher",
            "ours: vs the teacher",
            "ours: vs the control",
            "ours: vs Hedgehog",
            "paper: top-1 (ViT-B/16)",
            "paper: % of softmax",
        ],
        rows,
        caption,
    )
    plot_histories(
        {row_label(n): by_row[n] for n in ROWS if n in by_row},
        [("train/distill_loss", "stage 1: distillation loss"), ("train/finetune_loss", "stage 2: task loss")],
        out / "curves.png",
        f"ViT conversion ({scale} scale)",
    )
    return md


def main(argv: list[str] | None = None) -> None:
    table_main(argv, doc=__doc__, experiment=EXPERIMENT, make_tables=make_tables)


if __name__ == "__main__":
    main()
