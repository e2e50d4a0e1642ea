"""Tables 1 and 3 and the GLUE table of the finetuned-conversion experiment, from its run records.

Reads experiments/bert_glue/records/<scale>/*.json (and, for Table 3's AR column,
experiments/associative_recall/records/<scale>/*.json when present, each map at its best
learning rate); writes markdown and LaTeX to
experiments/bert_glue/tables/<scale>/ with the published numbers beside ours.

    python -m experiments.bert_glue.make_table --scale embedded
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from experiments.associative_recall import make_table as ar_table
from hedgehog.config import compose
from hedgehog.results import (
    DIFFERENCE_RULE,
    attention_label,
    compare_seeds,
    load_records,
    mean_spread,
    paper_key,
    paper_results,
    published_records,
    table_main,
    write_tables,
)

HERE = Path(__file__).resolve().parent
# Table 1's rows, in the paper's order (labels: hedgehog.results.labels; softmax is BERT-FT)
TABLE1_ROWS = (
    "softmax",
    "elu1",
    "relu",
    "performer",
    "cosformer",
    "exp_t",
    "exp_t2",
    "taylor2",
    "t2r",
    "t2r_hh",
    "hedgehog",
)
TABLE3_ROWS = ("softmax", "taylor2", "hedgehog")
GLUE_COLUMNS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")


def scale_settings(scale: str) -> dict[str, Any]:
    """The experiment's per-scale settings (task lists) from its composed config."""
    settings = compose(["experiment=bert_glue", f"scale={scale}"]).bert_glue
    return {
        "tasks": settings["tasks"].split(","),
        "feature_map_task": settings["feature_map_task"],
    }


def scores(records: list[dict[str, Any]], metric: str = "test/score") -> dict[tuple[str, str], list[float]]:
    """One test metric per (attention, task), one value per seed in seed order (records without it left out)."""
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["seed"]):
        if metric in r["metrics"]:
            out[(r["attention"], r["config"]["data"]["task"])].append(r["metrics"][metric])
    return out


def seed_list(records: list[dict[str, Any]], attention: str, task: str) -> list[int]:
    """The seeds of one (attention, task), in the order ``scores`` lists their values."""
    return sorted(
        r["seed"] for r in records if r["attention"] == attention and r["config"]["data"]["task"] == task
    )


def recover(row: dict[str, float], reference: dict[str, float], tasks: list[str]) -> float | None:
    """100 x mean(row) / mean(reference) over tasks both have; None if a task is missing."""
    if not all(t in row and t in reference for t in tasks):
        return None
    return 100.0 * statistics.mean(row[t] for t in tasks) / statistics.mean(reference[t] for t in tasks)


AR_RULE = (
    "AR setting chosen by a fixed rule: among the (pairs, tokens, width) settings recorded for softmax and "
    "Hedgehog, those with the most of the three rows, and of these the one where softmax's mean accuracy is "
    "furthest above chance (100 / pairs)"
)


def row_label(attention: str) -> str:
    """A row's label: the attention's, except BERT-FT, the finetuned softmax teacher."""
    return "BERT-FT (softmax)" if attention == "softmax" else attention_label(attention)


def ar_label(attention: str) -> str:
    """Row names in the AR note: AR models are trained from scratch, so softmax is not BERT-FT there."""
    return "softmax" if attention == "softmax" else row_label(attention)


def softmax_margin(by_attention: dict[str, list[float]], pairs: int) -> float:
    """Softmax's mean AR accuracy minus chance (100 / pairs), in points."""
    return 100.0 * statistics.mean(by_attention["softmax"]) - 100.0 / pairs


def pick_ar_setting(
    groups: dict[tuple[int, int, int], dict[str, list[float]]],
) -> tuple[int, int, int] | None:
    """``AR_RULE``: of the (pairs, tokens, width) settings with records for softmax and Hedgehog, those with
    the most Table-3 rows, then the one where softmax is furthest above chance; None if there is none."""
    shared = [k for k, by in groups.items() if "softmax" in by and "hedgehog" in by]
    rows = {k: sum(a in groups[k] for a in TABLE3_ROWS) for k in shared}
    return max(shared, key=lambda k: (rows[k], softmax_margin(groups[k], k[0])), default=None)


def ar_column(scale: str, folder: Path) -> tuple[dict[str, str], str]:
    """Associative-recall test accuracy per Table-3 row at the setting ``AR_RULE`` picks, and a caption note.

    ``folder``: the associative-recall records of this scale."""
    if not folder.exists():
        return {}, f"no associative-recall records at {scale} scale"
    # each (map, setting) at its best learning rate, as the AR table reports it
    records = [
        r
        for r in load_records([folder], experiment="associative_recall", tags=["mqar"])
        if "test/acc" in r["metrics"]
    ]
    groups: dict[tuple[int, int, int], dict[str, list[float]]] = defaultdict(dict)
    for (attention, (pairs, length), width), (_, runs) in ar_table.mqar_best(
        ar_table.mqar_cells(records)
    ).items():
        groups[(pairs, length, width)][attention] = [r["metrics"]["test/acc"] for r in runs]
    best = pick_ar_setting(groups)
    if best is None:
        return {}, f"no associative-recall setting at {scale} scale has records for softmax and Hedgehog"
    shared = [k for k, by in groups.items() if "softmax" in by and "hedgehog" in by]
    pairs, length, width = best
    by = groups[best]
    run = [a for a in TABLE3_ROWS if a in by]
    cells = {
        a: f"{mean_spread(by[a], scale=100)} [{pairs} pairs, {length} tokens, width {width}]"
        if a in by
        else f"not run at {scale} scale"
        for a in TABLE3_ROWS
    }
    margins = ", ".join(
        f"{k[0]}p/{k[1]}t/w{k[2]}: {softmax_margin(groups[k], k[0]):+.1f}" for k in sorted(shared)
    )
    note = (
        f"{AR_RULE}: {pairs} pairs, {length} tokens, width {width} (chance {100.0 / pairs:.1f}; softmax minus "
        f"chance per setting, in points: {margins}); each row at its best learning rate. Against chance, by "
        "Table 1's rule: "
        + "; ".join(f"{ar_label(a)} {compare_seeds(by[a], [1.0 / pairs], b_fixed=True)}" for a in run)
        + ". Against softmax: "
        + "; ".join(f"{ar_label(a)} {compare_seeds(by[a], by['softmax'])}" for a in run[1:])
    )
    return cells, note


def fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def make_tables(scale: str, records_dir: Path, ar_records_dir: Path, out: Path) -> None:
    """Tables 1 and 3 and the GLUE table from the records in records_dir, into out (.md and .tex)."""
    records = (
        load_records([records_dir], experiment="bert_glue", tags=["bert_glue"])
        if records_dir.exists()
        else []
    )
    if not records:
        raise SystemExit(
            f"no bert_glue records under {records_dir}; run `make reproduce-bert-glue SCALE={scale}` first"
        )
    settings = scale_settings(scale)
    main_task = settings["feature_map_task"]
    by_key = scores(records)
    # Tables 1 and 3 compare with CoLA's Matthews correlation: ours is the Table-1 task's
    mcc = scores(records, "test/matthews")
    # the GLUE table's columns: the configured tasks that have a BERT-FT record
    tasks = [t for t in settings["tasks"] if ("softmax", t) in by_key]
    unrun = [t for t in settings["tasks"] if t not in tasks]
    means = {k: statistics.mean(v) for k, v in by_key.items()}
    hardware = sorted({r["hardware"] for r in records})
    wall = sum(r["wall_time_s"] for r in records)
    footer = (
        f"{len(records)} runs, {wall / 60:.1f} min of training and testing in all, on {', '.join(hardware)}."
    )

    published = paper_results("associative_recall_and_bert_cola")["rows"]
    teacher = mcc.get(("softmax", main_task), [])
    hedgehog = mcc.get(("hedgehog", main_task), [])
    rows = []
    for name in TABLE1_ROWS:
        ours = mcc.get((name, main_task), [])
        paper = published.get(paper_key(name), {}).get("cola")
        # % of BERT-FT per seed of the row, over the mean of BERT-FT's seeds
        rec = [100.0 * v / statistics.mean(teacher) for v in ours] if ours and teacher else []
        paper_rec = 100.0 * paper / published["softmax"]["cola"] if paper is not None else None
        seeds = ", ".join(
            f"s{n}: {v:.1f}" for n, v in zip(seed_list(records, name, main_task), ours, strict=True)
        )
        versus = "" if name == "hedgehog" or not ours else compare_seeds(ours, hedgehog)
        versus_teacher = "" if name == "softmax" or not ours else compare_seeds(ours, teacher)
        rows.append(
            [
                row_label(name),
                mean_spread(ours) or "not run",
                seeds,
                mean_spread(rec),
                versus_teacher,
                versus,
                fmt(paper),
                fmt(paper_rec),
            ]
        )
    md1 = write_tables(
        out,
        "table1",
        [
            "feature map",
            f"ours: {main_task} MCC (mean ± std over seeds, n)",
            "ours: per seed",
            "ours: % of BERT-FT (mean ± std, n)",
            "ours: vs BERT-FT",
            "ours: vs Hedgehog",
            "paper: CoLA MCC",
            "paper: % of softmax",
        ],
        rows,
        f"Table 1: conversion of a finetuned BERT ({scale} scale) by feature map; every conversion starts from "
        f"the BERT-FT of its own seed. Our rule: {DIFFERENCE_RULE}; the 'vs' columns apply it. {footer}",
    )

    ar, ar_note = ar_column(scale, ar_records_dir)
    rows = []
    for name in TABLE3_ROWS:
        paper = published[paper_key(name)]
        rows.append(
            [
                row_label(name),
                ar.get(name, "not recorded"),
                fmt(paper.get("ar")),
                mean_spread(mcc.get((name, main_task), [])) or "not run",
                fmt(paper.get("cola")),
            ]
        )
    versus = "; ".join(
        f"{row_label(a)} vs {row_label(b)}: {compare_seeds(mcc.get((a, main_task), []), mcc.get((b, main_task), []))}"
        for a, b in (("hedgehog", "taylor2"), ("hedgehog", "softmax"), ("taylor2", "softmax"))
    )
    md3 = write_tables(
        out,
        "table3",
        ["attention", "ours: AR accuracy", "paper: AR", f"ours: {main_task} MCC", "paper: CoLA MCC"],
        rows,
        f"Table 3: Hedgehog vs Taylor-2 vs softmax ({scale} scale); AR from experiments/associative_recall/records "
        f"(mean ± std over seeds, n). {ar_note}. {main_task} MCC, by Table 1's rule: {versus}. {footer}",
    )

    attentions = [a for a in TABLE1_ROWS if all((a, t) in by_key for t in tasks)]
    softmax = {t: means[("softmax", t)] for t in tasks if ("softmax", t) in means}
    glue_published = paper_results("glue_finetuned_conversion")["rows"]
    rows = []
    for a in attentions:
        row = {t: means[(a, t)] for t in tasks}
        seeds = min(len(by_key[(a, t)]) for t in tasks)
        # % recover per seed (the seeds every task has), over BERT-FT's mean
        per_seed = [recover({t: by_key[(a, t)][i] for t in tasks}, softmax, tasks) for i in range(seeds)]
        paper = glue_published.get(a, {}).get("recover")
        versus = (
            ""
            if a == "softmax"
            else "; ".join(f"{t}: {compare_seeds(by_key[(a, t)], by_key[('softmax', t)])}" for t in tasks)
        )
        rows.append(
            [
                row_label(a),
                *(mean_spread(by_key[(a, t)]) for t in tasks),
                f"{fmt(recover(row, softmax, tasks))} ({mean_spread(per_seed)} per seed)",
                fmt(paper),
                versus,
            ]
        )
    mdg = write_tables(
        out,
        "glue",
        [
            "model",
            *(f"{t} (mean ± std, n)" for t in tasks),
            "ours: % recover",
            "paper: % recover",
            "vs BERT-FT",
        ],
        rows,
        f"GLUE table ({scale} scale): test score per task (x100; mean of the task's metrics), % recover = 100 x "
        "mean(converted) / mean(BERT-FT) over the tasks (per seed: each seed's scores over BERT-FT's mean); "
        "'vs BERT-FT' applies Table 1's rule per task"
        + (f"; tasks without records: {', '.join(unrun)}" if unrun else "")
        + f". {footer}",
    )
    paper_rows = [
        [
            row_label(n),
            *(fmt(glue_published[n].get(c)) for c in GLUE_COLUMNS),
            fmt(glue_published[n]["recover"]),
        ]
        for n in ("softmax", "hedgehog")
    ]
    mdp = write_tables(
        out,
        "glue_paper",
        ["paper (BERT-base)", *GLUE_COLUMNS, "% recover"],
        paper_rows,
        "GLUE table as published (BERT-base finetuned per task; dev sets).",
    )
    print(md1, md3, mdg, mdp, sep="\n")


def main(argv: list[str] | None = None) -> None:
    table_main(
        argv,
        doc=__doc__,
        experiment="bert_glue",
        make_tables=lambda scale, records, out: make_tables(
            scale, records, published_records("associative_recall", scale), out
        ),
    )


if __name__ == "__main__":
    main()
