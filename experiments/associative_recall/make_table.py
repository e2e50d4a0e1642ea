"""The associative-recall table (paper Tables 2-3, AR column) and its plot, from the run records.

Reads experiments/associative_recall/records/<scale>/ (the difficulty sweep, tag
``difficulty_sweep``) and records/lr_tuning/<scale>/ (the learning-rate grid, tag ``lr_tuning``);
writes to experiments/associative_recall/tables/<scale>/:
  accuracy.{md,tex}            test accuracy per feature map, difficulty and width (mean ± std over
                               seeds, n) beside the paper's AR column
  lr_tuning.{md,tex}           mean validation accuracy per feature map and learning rate
  accuracy_vs_difficulty.png   accuracy against difficulty, one line per map, one panel per width
  timing.md                    wall time per run (training + test, as recorded)

    python -m experiments.associative_recall.make_table --scale embedded
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from hedgehog.results import (
    attention_label,
    load_records,
    mean_spread,
    paper_key,
    paper_results,
    write_tables,
)

HERE = Path(__file__).resolve().parent
EXPERIMENT = "associative_recall"
# the table's row order (labels: hedgehog.results.labels)
ORDER = (
    "softmax",
    "taylor2",
    "hedgehog",
    "hedgehog_auto",
    "hedgehog_exp",
    "elu1",
    "performer",
    "cosformer",
    "relu",
    "exp_t",
)


def level(record: dict[str, Any]) -> tuple[int, int]:
    """A run's difficulty: (key-value pairs, sequence length)."""
    data = record["config"]["data"]
    return data["num_pairs"], data["seq_len"]


def width(record: dict[str, Any]) -> int:
    return record["config"]["model"]["d_model"]


def order(names: set[str]) -> list[str]:
    """Known maps in the table's order, then any others alphabetically."""
    return [n for n in ORDER if n in names] + sorted(names - set(ORDER))


def paper_cell(name: str) -> str:
    published = paper_results("associative_recall_and_bert_cola")["rows"]
    row = published.get(paper_key(name))
    if not row or "ar" not in row:
        return ""
    unconfirmed = "ar unconfirmed" in str(row.get("provenance", ""))
    return f"{row['ar']:.1f}" + (" (unconfirmed)" if unconfirmed else "")


def accuracy_table(records: list[dict[str, Any]], scale: str, out: Path) -> str:
    acc: dict[tuple[str, int, tuple[int, int]], list[float]] = defaultdict(list)
    for r in records:
        acc[(r["attention"], width(r), level(r))].append(r["metrics"]["test/acc"])
    widths = sorted({width(r) for r in records})
    levels = sorted({level(r) for r in records})
    headers = (
        ["feature map"] + [f"d={w}, {p} pairs / {t} tok" for w in widths for p, t in levels] + ["paper AR"]
    )
    rows = [
        [attention_label(name)]
        + [mean_spread(acc.get((name, w, lv), []), scale=100.0) for w in widths for lv in levels]
        + [paper_cell(name)]
        for name in order({r["attention"] for r in records})
    ]
    lr = {r["attention"]: r["config"]["task"]["optimizer"]["lr"] for r in records}
    steps = sorted({r["global_step"] for r in records})
    caption = (
        f"Associative recall ({scale} scale): test accuracy % at query positions, mean ± std over seeds (n), "
        f"per model width d and difficulty (key-value pairs / sequence length); {steps} training steps; "
        f"learning rate per map: {', '.join(f'{n} {lr[n]:g}' for n in order(set(lr)))}. "
        "Paper: Tables 2-3, AR column (its task sizes are not stated in what we could confirm)."
    )
    return write_tables(out, "accuracy", headers, rows, caption)


def lr_table(records: list[dict[str, Any]], used: dict[str, float], scale: str, out: Path) -> str:
    val: dict[tuple[str, float], list[float]] = defaultdict(list)
    for r in records:
        val[(r["attention"], r["config"]["task"]["optimizer"]["lr"])].append(r["metrics"]["val/acc"])
    lrs = sorted({lr for _, lr in val})
    headers = ["feature map"] + [f"lr {lr:g}" for lr in lrs] + ["best (mean val acc)", "used in the sweep"]
    rows = []
    for name in order({n for n, _ in val}):
        means = {lr: statistics.mean(val[(name, lr)]) for lr in lrs if (name, lr) in val}
        # means equal at the 0.1-point precision shown are ties (float noise decided two exact ties)
        best = max(means, key=lambda lr: (round(100 * means[lr], 1), -lr))
        rows.append(
            [attention_label(name)]
            + [mean_spread(val.get((name, lr), []), scale=100.0) for lr in lrs]
            + [f"{best:g}", f"{used[name]:g}" if name in used else ""]
        )
    levels = sorted({level(r) for r in records})
    widths = sorted({width(r) for r in records})
    caption = (
        f"Learning-rate tuning ({scale} scale): validation accuracy % (best checkpoint), mean ± std over seeds (n), "
        f"at {', '.join(f'{p} pairs / {t} tok' for p, t in levels)}, width {widths}; the best mean picks each "
        "map's rate (ties go to the smaller rate); the last column is the rate the sweep's records used."
    )
    return write_tables(out, "lr_tuning", headers, rows, caption)


def plot(records: list[dict[str, Any]], scale: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted({width(r) for r in records})
    levels = sorted({level(r) for r in records})
    fig, axes = plt.subplots(1, len(widths), figsize=(5.5 * len(widths), 4.2), sharey=True, squeeze=False)
    for ax, w in zip(axes[0], widths, strict=True):
        for name in order({r["attention"] for r in records}):
            xs, means, stds = [], [], []
            for i, lv in enumerate(levels):
                values = [
                    100 * r["metrics"]["test/acc"]
                    for r in records
                    if r["attention"] == name and (width(r), level(r)) == (w, lv)
                ]
                if values:
                    xs.append(i)
                    means.append(statistics.mean(values))
                    stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            style = "-" if name.startswith(("hedgehog", "softmax", "taylor2")) else "--"
            ax.errorbar(
                xs, means, yerr=stds, marker="o", linestyle=style, capsize=3, label=attention_label(name)
            )
        chance = [100 / p for p, _ in levels]
        ax.plot(range(len(levels)), chance, color="black", linestyle=":", label="chance (1 / pairs)")
        ax.set_xticks(range(len(levels)), [f"{p} pairs\n{t} tokens" for p, t in levels])
        ax.set_title(f"width {w}")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy at queries (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"Associative recall ({scale}): mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def timing(records: list[dict[str, Any]], out: Path) -> str:
    times = [r["wall_time_s"] for r in records]
    by_map: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_map[r["attention"]].append(r["wall_time_s"])
    hardware = sorted({r["hardware"] for r in records})
    lines = [
        f"{len(times)} runs on {', '.join(hardware)}: {sum(times):.0f} s of run wall time in all, "
        f"{statistics.mean(times):.1f} s per run (min {min(times):.1f}, max {max(times):.1f}).",
        "",
        "| feature map | runs | mean s per run |",
        "|---|---|---|",
    ]
    lines += [
        f"| {attention_label(n)} | {len(by_map[n])} | {statistics.mean(by_map[n]):.1f} |"
        for n in order(set(by_map))
    ]
    text = "\n".join(lines) + "\n"
    (out / "timing.md").write_text(text)
    return text


def make_tables(scale: str, records_dir: Path, out: Path) -> None:
    """The tables and the plot from the records under records_dir (<scale>/ and lr_tuning/<scale>/), into out."""
    out.mkdir(parents=True, exist_ok=True)
    folder = records_dir / scale
    found = (
        load_records([folder], experiment=EXPERIMENT, tags=["difficulty_sweep"]) if folder.exists() else []
    )
    sweep = [r for r in found if r.get("scale") == scale and "test/acc" in r["metrics"]]
    if not sweep:
        raise SystemExit(
            f"no {EXPERIMENT} difficulty-sweep records for scale {scale!r} under {folder}; "
            f"run: make reproduce-ar SCALE={scale}"
        )
    print(accuracy_table(sweep, scale, out))
    plot(sweep, scale, out / "accuracy_vs_difficulty.png")
    print(timing(sweep, out))
    tuning_dir = records_dir / "lr_tuning" / scale
    tuning = (
        [
            r
            for r in load_records([tuning_dir], experiment=EXPERIMENT, tags=["lr_tuning"])
            if r.get("scale") == scale and "val/acc" in r["metrics"]
        ]
        if tuning_dir.exists()
        else []
    )
    if tuning:
        used = {r["attention"]: r["config"]["task"]["optimizer"]["lr"] for r in sweep}
        print(lr_table(tuning, used, scale, out))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="embedded")
    parser.add_argument("--records", type=Path, default=HERE / "records", help="the records folder")
    parser.add_argument("--out", type=Path, default=None, help="default: tables/<scale> beside this script")
    args = parser.parse_args(argv)
    make_tables(args.scale, args.records, args.out or HERE / "tables" / args.scale)


if __name__ == "__main__":
    main()
