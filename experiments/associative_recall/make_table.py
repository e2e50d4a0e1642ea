"""The associative-recall table (paper Tables 2-3, AR column) and its plot, from the run records.

Reads experiments/associative_recall/records/<scale>/ and writes to
experiments/associative_recall/tables/<scale>/. One protocol at every scale, zoology's MQAR protocol
(``make reproduce-ar``, conf/sweep/associative_recall.yaml, tag ``mqar``): every feature map x (pairs,
sequence length) x width x learning rate x seed, each (map, length, width) cell reported at its best
learning rate (best mean validation accuracy over seeds; ties go to the smaller rate):
  mqar_accuracy.{md,tex}       test accuracy per feature map, sequence length and width at the cell's best
                               learning rate, named in the cell, beside the paper's AR column
  mqar_lr_sweep.{md,tex}       every cell's mean validation accuracy per learning rate, and its steps
  accuracy_vs_width.png        accuracy at the best learning rate against width, one line per map,
                               one panel per sequence length
  timing.md                    wall time per run (training + test, as recorded)

    python -m experiments.associative_recall.make_table --scale embedded
"""

from __future__ import annotations

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
    table_main,
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


def learning_rate(record: dict[str, Any]) -> float:
    return record["config"]["task"]["optimizer"]["lr"]


def best_lr(means: dict[float, float]) -> float:
    """The learning rate with the best mean validation accuracy; means equal at the 0.1-point precision
    shown are ties (float noise decided two exact ties) and go to the smaller rate."""
    return max(means, key=lambda lr: (round(100 * means[lr], 1), -lr))


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


def failure(record: dict[str, Any]) -> str:
    """What a failed run's record says in a table cell: diverged (its inputs turned NaN or inf) or failed."""
    return "diverged" if "NaN or inf" in record.get("error", "") else "failed"


def mqar_accuracy_table(
    records: list[dict[str, Any]], scale: str, out: Path, failed: list[dict[str, Any]] = ()
) -> str:
    """``failed``: records of runs that raised (``status: failed``); a cell names how many of its runs did."""
    best = mqar_best(mqar_cells(records))
    both = [*records, *failed]
    levels = sorted({level(r) for r in both}, key=lambda lv: (lv[1], lv[0]))
    widths = sorted({width(r) for r in both})
    failures: dict[tuple[str, tuple[int, int], int], list[str]] = defaultdict(list)
    for r in failed:
        failures[(r["attention"], level(r), width(r))].append(failure(r))
    headers = (
        ["feature map"] + [f"{t} tok / {p} pairs, d={w}" for p, t in levels for w in widths] + ["paper AR"]
    )
    rows = []
    for name in order({r["attention"] for r in both}):
        cells = []
        for lv in levels:
            for w in widths:
                found = best.get((name, lv, w))
                cell = (
                    f"{mean_spread([r['metrics']['test/acc'] for r in found[1]], scale=100.0)} @ {found[0]:g}"
                    if found
                    else ""
                )
                if lost := failures.get((name, lv, w)):
                    kinds = ", ".join(f"{lost.count(k)} {k}" for k in sorted(set(lost)))
                    cell = f"{cell} ({kinds} run(s) not counted)" if cell else f"no finished run ({kinds})"
                cells.append(cell)
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
    """The tables and plot from the sweep records in records_dir (one scale's), into out."""
    out.mkdir(parents=True, exist_ok=True)
    folder = records_dir
    records = [
        r
        for r in (load_records([folder], experiment=EXPERIMENT, tags=["mqar"]) if folder.exists() else [])
        if r.get("scale") == scale and "test/acc" in r["metrics"]
    ]
    if not records:
        raise SystemExit(
            f"no {EXPERIMENT} sweep records for scale {scale!r} under {folder}; run: make reproduce-ar SCALE={scale}"
        )
    failed = [
        r
        for r in (
            load_records([folder], experiment=EXPERIMENT, tags=["mqar"], failed=True)
            if folder.exists()
            else []
        )
        if r.get("scale") == scale
    ]
    print(mqar_accuracy_table(records, scale, out, failed))
    print(mqar_lr_table(records, scale, out))
    plot_width(records, scale, out / "accuracy_vs_width.png")
    print(timing(records, out))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    table_main(argv, doc=__doc__, experiment=EXPERIMENT, make_tables=make_tables)


if __name__ == "__main__":
    main()
