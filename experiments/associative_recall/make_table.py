"""The associative-recall table (paper Tables 2-3, AR column) and its plot, from the run records.

Reads experiments/associative_recall/records/<scale>/ and writes to
experiments/associative_recall/tables/<scale>/. Two kinds of sweep:

The difficulty sweep (tag ``difficulty_sweep``, ``make reproduce-ar``; one learning rate per map,
tuned beforehand on the grid in records/lr_tuning/<scale>/, tag ``lr_tuning``):
  accuracy.{md,tex}            test accuracy per feature map, difficulty and width (mean ± std over
                               seeds, n) beside the paper's AR column
  lr_tuning.{md,tex}           mean validation accuracy per feature map and learning rate
  accuracy_vs_difficulty.png   accuracy against difficulty, one line per map, one panel per width

The MQAR sweep (tag ``mqar``, conf/sweep/associative_recall_mqar.yaml; zoology's protocol, the
learning rate swept in every cell):
  mqar_accuracy.{md,tex}       test accuracy per feature map, sequence length and width at the best
                               learning rate of the cell (best mean validation accuracy), named in the cell
  mqar_lr_sweep.{md,tex}       every cell's mean validation accuracy per learning rate, and its steps
  accuracy_vs_width.png        accuracy at the best learning rate against width, one line per map,
                               one panel per sequence length

and for either, timing.md: wall time per run (training + test, as recorded).

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
    lr = {r["attention"]: learning_rate(r) for r in records}
    steps = sorted({r["global_step"] for r in records})
    caption = (
        f"Associative recall ({scale} scale): test accuracy % at query positions, mean ± std over seeds (n), "
        f"per model width d and difficulty (key-value pairs / sequence length); {steps} training steps; "
        f"learning rate per map: {', '.join(f'{n} {lr[n]:g}' for n in order(set(lr)))}. "
        "Paper: Tables 2-3, AR column (its task sizes are not stated in what we could confirm)."
    )
    return write_tables(out, "accuracy", headers, rows, caption)


def learning_rate(record: dict[str, Any]) -> float:
    return record["config"]["task"]["optimizer"]["lr"]


def best_lr(means: dict[float, float]) -> float:
    """The learning rate with the best mean validation accuracy; means equal at the 0.1-point precision
    shown are ties (float noise decided two exact ties) and go to the smaller rate."""
    return max(means, key=lambda lr: (round(100 * means[lr], 1), -lr))


def lr_table(records: list[dict[str, Any]], used: dict[str, float], scale: str, out: Path) -> str:
    val: dict[tuple[str, float], list[float]] = defaultdict(list)
    for r in records:
        val[(r["attention"], learning_rate(r))].append(r["metrics"]["val/acc"])
    lrs = sorted({lr for _, lr in val})
    headers = ["feature map"] + [f"lr {lr:g}" for lr in lrs] + ["best (mean val acc)", "used in the sweep"]
    rows = []
    for name in order({n for n, _ in val}):
        means = {lr: statistics.mean(val[(name, lr)]) for lr in lrs if (name, lr) in val}
        best = best_lr(means)
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


def mqar_cells(
    records: list[dict[str, Any]],
) -> dict[tuple[str, tuple[int, int], int], dict[float, list[dict[str, Any]]]]:
    """The MQAR records by cell (map, (pairs, length), width), then by learning rate."""
    cells: dict[tuple[str, tuple[int, int], int], dict[float, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in records:
        cells[(r["attention"], level(r), width(r))][learning_rate(r)].append(r)
    return cells


def selection_score(record: dict[str, Any]) -> float:
    """The validation accuracy a run is judged by: its best checkpoint's (the one tested)."""
    return record["metrics"].get("best/val/acc", record["metrics"]["val/acc"])


def mqar_best(
    cells: dict[tuple[str, tuple[int, int], int], dict[float, list[dict[str, Any]]]],
) -> dict[tuple[str, tuple[int, int], int], tuple[float, list[dict[str, Any]]]]:
    """Per cell, the learning rate with the best mean validation accuracy over seeds, and its runs."""
    best = {}
    for cell, by_lr in cells.items():
        lr = best_lr({lr: statistics.mean(map(selection_score, runs)) for lr, runs in by_lr.items()})
        best[cell] = (lr, by_lr[lr])
    return best


def mqar_protocol(records: list[dict[str, Any]]) -> str:
    """The sweep's budget in words, from the records' configs."""
    steps = sorted({r["config"]["trainer"]["max_steps"] for r in records})
    batch = sorted({r["config"]["data"]["batch_size"] for r in records})
    vocab = sorted({r["config"]["data"]["vocab_size"] for r in records})
    stops = sorted(
        {
            c["early_stop"]["stopping_threshold"]
            for c in (r["config"].get("callbacks") or {} for r in records)
            if c.get("early_stop")
        }
    )
    lrs = sorted({learning_rate(r) for r in records})
    stop = (
        f", early stop at validation accuracy > {', '.join(f'{100 * t:g}%' for t in stops)}" if stops else ""
    )
    return (
        f"vocabulary {', '.join(map(str, vocab))}, batch {', '.join(map(str, batch))}, at most "
        f"{', '.join(map(str, steps))} steps{stop}; learning rates swept: {', '.join(f'{lr:g}' for lr in lrs)}"
    )


def mqar_accuracy_table(records: list[dict[str, Any]], scale: str, out: Path) -> str:
    best = mqar_best(mqar_cells(records))
    levels = sorted({level(r) for r in records}, key=lambda lv: (lv[1], lv[0]))
    widths = sorted({width(r) for r in records})
    headers = (
        ["feature map"] + [f"{t} tok / {p} pairs, d={w}" for p, t in levels for w in widths] + ["paper AR"]
    )
    rows = []
    for name in order({r["attention"] for r in records}):
        cells = []
        for lv in levels:
            for w in widths:
                found = best.get((name, lv, w))
                cells.append(
                    f"{mean_spread([r['metrics']['test/acc'] for r in found[1]], scale=100.0)} @ {found[0]:g}"
                    if found
                    else ""
                )
        rows.append([attention_label(name), *cells, paper_cell(name)])
    caption = (
        f"Associative recall, MQAR protocol ({scale} scale): test accuracy % at query positions, mean ± std "
        "over seeds (n), at the best learning rate of each cell (named after @; the best mean validation "
        f"accuracy of the rates swept), per sequence length / key-value pairs and model width d; "
        f"{mqar_protocol(records)}. Paper: Tables 2-3, AR column (its task sizes are not stated in what we "
        "could confirm)."
    )
    return write_tables(out, "mqar_accuracy", headers, rows, caption)


def mqar_lr_table(records: list[dict[str, Any]], scale: str, out: Path) -> str:
    cells = mqar_cells(records)
    best = mqar_best(cells)
    lrs = sorted({learning_rate(r) for r in records})
    headers = (
        ["feature map", "tokens / pairs", "width"]
        + [f"val acc, lr {lr:g}" for lr in lrs]
        + ["best lr", "test acc at best lr", "steps at best lr"]
    )
    rows = []
    names = order({name for name, _, _ in cells})
    for name in names:
        for lv, w in sorted({(lv, w) for n, lv, w in cells if n == name}, key=lambda k: (k[0][1], k[1])):
            by_lr = cells[(name, lv, w)]
            lr, runs = best[(name, lv, w)]
            rows.append(
                [attention_label(name), f"{lv[1]} / {lv[0]}", w]
                + [
                    mean_spread([selection_score(r) for r in by_lr.get(x, [])], scale=100.0)
                    if x in by_lr
                    else ""
                    for x in lrs
                ]
                + [
                    f"{lr:g}",
                    mean_spread([r["metrics"]["test/acc"] for r in runs], scale=100.0),
                    f"{statistics.mean(r['global_step'] for r in runs):.0f}",
                ]
            )
    caption = (
        f"Associative recall, MQAR protocol ({scale} scale): every cell's validation accuracy % (best "
        "checkpoint) per learning rate, mean ± std over seeds (n); the best mean picks the cell's rate "
        "(ties go to the smaller rate), whose test accuracy and mean training steps (an early stop ends a "
        f"run sooner) follow; {mqar_protocol(records)}."
    )
    return write_tables(out, "mqar_lr_sweep", headers, rows, caption)


def plot_width(records: list[dict[str, Any]], scale: str, path: Path) -> None:
    """Accuracy at each cell's best learning rate against width, one line per map, one panel per length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = mqar_best(mqar_cells(records))
    levels = sorted({level(r) for r in records}, key=lambda lv: (lv[1], lv[0]))
    widths = sorted({width(r) for r in records})
    fig, axes = plt.subplots(1, len(levels), figsize=(4.6 * len(levels), 4.2), sharey=True, squeeze=False)
    for ax, lv in zip(axes[0], levels, strict=True):
        for name in order({r["attention"] for r in records}):
            xs, means, stds = [], [], []
            for w in widths:
                if (name, lv, w) in best:
                    values = [100 * r["metrics"]["test/acc"] for r in best[(name, lv, w)][1]]
                    xs.append(w)
                    means.append(statistics.mean(values))
                    stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            style = "-" if name.startswith(("hedgehog", "softmax", "taylor2")) else "--"
            ax.errorbar(
                xs, means, yerr=stds, marker="o", linestyle=style, capsize=3, label=attention_label(name)
            )
        ax.axhline(100 / lv[0], color="black", linestyle=":", label="chance (1 / pairs)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xlabel("model width")
        ax.set_title(f"{lv[1]} tokens, {lv[0]} pairs")
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy at queries (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"MQAR ({scale}): best learning rate per cell, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def make_tables(scale: str, records_dir: Path, out: Path) -> None:
    """The tables and plots from the records under records_dir (<scale>/ and lr_tuning/<scale>/), into out."""
    out.mkdir(parents=True, exist_ok=True)
    folder = records_dir / scale
    found = [
        r
        for r in (load_records([folder], experiment=EXPERIMENT) if folder.exists() else [])
        if r.get("scale") == scale and "test/acc" in r["metrics"]
    ]
    sweep = [r for r in found if "difficulty_sweep" in r["tags"]]
    mqar = [r for r in found if "mqar" in r["tags"]]
    if not sweep and not mqar:
        raise SystemExit(
            f"no {EXPERIMENT} sweep records for scale {scale!r} under {folder}; run: make reproduce-ar "
            f"SCALE={scale} (the difficulty sweep), or the MQAR sweep in conf/sweep/associative_recall_mqar.yaml"
        )
    if sweep:
        print(accuracy_table(sweep, scale, out))
        plot(sweep, scale, out / "accuracy_vs_difficulty.png")
    if mqar:
        print(mqar_accuracy_table(mqar, scale, out))
        print(mqar_lr_table(mqar, scale, out))
        plot_width(mqar, scale, out / "accuracy_vs_width.png")
    print(timing(sweep + mqar, out))
    tuning_dir = records_dir / "lr_tuning" / scale
    tuning = (
        [
            r
            for r in load_records([tuning_dir], experiment=EXPERIMENT, tags=["lr_tuning"])
            if r.get("scale") == scale and "val/acc" in r["metrics"]
        ]
        if tuning_dir.exists() and sweep
        else []
    )
    if tuning:
        used = {r["attention"]: learning_rate(r) for r in sweep}
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
