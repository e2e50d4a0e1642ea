"""Table 10 (pretrained GPT-2 converted and finetuned; test perplexity) and its curves, from the run records.

Reads the published records of experiment gpt2_convert (experiments/gpt2_convert/records/<scale>/, tag
``gpt2_convert``) and writes to experiments/gpt2_convert/tables/<scale>/:
  table10.{md,tex}   test perplexity per row (mean ± std over seeds, n, per seed) beside the paper's, the
                     gap of each row to finetuned softmax and the differences our rule establishes; the
                     converted Hybrid H3, Hyena and H3 rows when run ("not run" otherwise)
  curves.png         training losses (stage 1: distillation; stage 2: next-token) against steps

    python -m experiments.gpt2_convert.make_table --scale embedded
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from hedgehog.paths import project_root
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
EXPERIMENT = "gpt2_convert"
# the rows we run -> (label, the paper's row key)
RUN = {
    "zero_shot": ("pretrained, zero-shot (softmax)", "gpt2_zero_shot"),
    "softmax": ("finetuned (softmax)", "gpt2_finetuned"),
    "t2r": (f"{attention_label('t2r')} (end to end)", "t2r"),
    "hedgehog": (attention_label("hedgehog"), "hedgehog"),
    # the sub-quadratic baselines: ours convert the pretrained model (attention replaced by the mixer,
    # trained end to end); the paper's numbers are of models pretrained as Hybrid H3 / Hyena
    "h3_hybrid": (f"{attention_label('h3_hybrid')} (converted)", "hybrid_h3"),
    "hyena": (f"{attention_label('hyena')} (converted)", "hyena"),
    "h3": (f"{attention_label('h3')} (converted)", None),
}
MIXERS = ("h3_hybrid", "hyena", "h3")
MIXERS_NOTE = (
    "Converted Hybrid H3, Hyena, H3: the pretrained model's attention replaced by the mixer (Hybrid H3 keeps "
    "softmax in 0-indexed layers 1 and round(2N/3)), its MLPs and embeddings kept, no stage 1 (no feature maps), "
    "stage 2 as every row; the paper's Hybrid H3 and Hyena numbers are of models trained as such from scratch on "
    "WikiText-103, not conversions, and it has no H3-only row. "
)


def row_of(record: dict[str, Any]) -> str:
    """A record's row: the zero-shot evaluation is the softmax run in which nothing trained."""
    task = record["config"]["task"]
    if record["attention"] == "softmax" and task["distill_steps"] == 0 and task["finetune_steps"] == 0:
        return "zero_shot"
    return record["attention"]


def model_name(pretrained: str) -> str:
    """The pretrained model as a reader can find it: a folder under the project by its relative path
    (the embedded softmax GPT-2 of gpt2_wt103 lives under outputs/, also when the record was written in a
    checkout at another path), anything else as given."""
    path = Path(pretrained)
    if path.is_absolute() and path.is_relative_to(project_root()):
        return str(path.relative_to(project_root()))
    if path.is_absolute() and "outputs" in path.parts:
        # a record written in another checkout of the project: the same folder, relative to that checkout
        return str(Path(*path.parts[path.parts.index("outputs") :]))
    return pretrained


def make_tables(scale: str, records_dir: Path, out: Path) -> str:
    """The table and the curves from the records in records_dir, into out; returns the markdown."""
    records = records_with(records_dir, EXPERIMENT, "test/ppl", scale)
    ppl: dict[str, dict[int, float]] = defaultdict(dict)
    by_row: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["seed"]):
        ppl[row_of(r)][r["seed"]] = r["metrics"]["test/ppl"]
        by_row[row_of(r)].append(r)
    published = paper_results("gpt2_wikitext103_pretrained_conversion")["rows"]
    finetuned = list(ppl.get("softmax", {}).values())
    hedgehog = list(ppl.get("hedgehog", {}).values())
    rows = []
    for name, (label, key) in RUN.items():
        values = list(ppl.get(name, {}).values())
        gap = (
            f"{statistics.mean(values) - statistics.mean(finetuned):+.2f}"
            if values and finetuned and name != "softmax"
            else ""
        )
        paper = "" if key is None else f"{published[key]:.1f}"
        paper_gap = (
            f"{published[key] - published['gpt2_finetuned']:+.1f}"
            if key is not None and name != "softmax"
            else ""
        )
        rows.append(
            [
                label,
                mean_spread(values, digits=2) or "not run",
                ", ".join(f"s{s}: {v:.2f}" for s, v in ppl.get(name, {}).items()),
                gap,
                "" if name == "hedgehog" or not values else compare_seeds(values, hedgehog),
                paper,
                paper_gap,
            ]
        )
    config = records[0]["config"]
    data = config["data"]
    # the two stages' lengths as Hedgehog ran them (rows without feature maps skip stage 1)
    task = next((r["config"]["task"] for r in records if r["attention"] == "hedgehog"), config["task"])
    hardware = sorted({r["hardware"] for r in records})
    wall = sum(r["wall_time_s"] for r in records)
    caption = (
        f"Table 10, pretrained GPT-2 converted and finetuned ({scale} scale): test perplexity (lower is better), mean "
        f"± std over seeds (n). Ours: {model_name(config['model']['pretrained'])} converted and finetuned on {data['corpus']} "
        f"({data['seq_len']}-token context, batch {data['batch_size']}); stage 1 (Hedgehog) {task['distill_steps']} "
        f"steps, stage 2 {task['finetune_steps']} steps for every trained row. 'vs finetuned' is the gap of the row's "
        f"mean to finetuned softmax, in perplexity points; 'vs Hedgehog': {DIFFERENCE_RULE}. The paper's claim: "
        f"Hedgehog within about 1 point of finetuned softmax ({published['hedgehog']} vs {published['gpt2_finetuned']}) "
        f"and ahead of T2R ({published['t2r']}). {MIXERS_NOTE if any(n in ppl for n in MIXERS) else ''}"
        f"{len(records)} runs, {wall / 60:.1f} min in all, on "
        f"{', '.join(hardware)}."
    )
    md = write_tables(
        out,
        "table10",
        [
            "model",
            "ours: test ppl",
            "ours: per seed",
            "ours: vs finetuned",
            "ours: vs Hedgehog",
            "paper: test ppl",
            "paper: vs finetuned",
        ],
        rows,
        caption,
    )
    plot_histories(
        {RUN[n][0]: by_row[n] for n in RUN if n in by_row and n != "zero_shot"},
        [
            ("train/distill_loss", "stage 1: distillation loss"),
            ("train/finetune_loss", "stage 2: next-token loss"),
        ],
        out / "curves.png",
        f"GPT-2 conversion ({scale} scale)",
    )
    return md


def main(argv: list[str] | None = None) -> None:
    table_main(argv, doc=__doc__, experiment=EXPERIMENT, make_tables=make_tables)


if __name__ == "__main__":
    main()
