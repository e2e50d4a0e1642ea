"""Table 11 (a pretrained Llama converted with LoRA, summarisation ROUGE), its example summaries and figures.

Reads the published records of experiment llama_samsum (experiments/llama_samsum/records/<scale>/, tag
``llama_samsum``) and writes to experiments/llama_samsum/tables/<scale>/:
  table11.{md,tex}  test ROUGE-1/2/L F1 per row (mean ± std over seeds, n), ROUGE-1 per seed, each row's
                    ROUGE-1 as a % of softmax + LoRA's, the difference to Hedgehog + LoRA our rule
                    establishes, minutes per run; the paper's numbers beside ours
  examples.md       the same 3 test papers summarised by every row (seed 0), with the reference
  rouge.png         ROUGE-1/2/L per row, the seeds as points
  curves.png        training losses against steps (stage 1: distillation; stage 2: LoRA's next-token loss)

    python -m experiments.llama_samsum.make_table --scale embedded
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from hedgehog.results import (
    DIFFERENCE_RULE,
    compare_seeds,
    mean_spread,
    paper_results,
    plot_histories,
    records_with,
    table_main,
    write_tables,
)

HERE = Path(__file__).resolve().parent
EXPERIMENT = "llama_samsum"
ROUGE = ("rouge1", "rouge2", "rougeL")
# our rows -> (label, the paper's row key or None)
ROWS = {
    "zero_shot": ("softmax, zero-shot", "softmax_zero_shot"),
    "softmax": ("softmax + LoRA", "softmax_lora"),
    "t2r": ("T2R + LoRA", "t2r_lora"),
    "hedgehog": ("Hedgehog + LoRA", "hedgehog_lora"),
    "hedgehog_window": ("Hedgehog-hybrid (window 64) + LoRA", None),
    "hedgehog_mse": ("Hedgehog + LoRA, output-MSE stage 1", None),
}
EXAMPLES = 3


def row_of(record: dict[str, Any]) -> str:
    """A record's row: nothing trained (zero-shot), output-MSE stage 1, or its attention."""
    task = record["config"]["task"]
    if task["distill_steps"] == 0 and task["finetune_steps"] == 0:
        return "zero_shot"
    if record["attention"] == "hedgehog" and task["distill_loss"] == "mse":
        return "hedgehog_mse"
    return record["attention"]


def grouped(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records by row, in seed order."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r["seed"]):
        rows[row_of(r)].append(r)
    return rows


def metric(records: list[dict[str, Any]], name: str) -> list[float]:
    return [r["metrics"][f"test/{name}"] for r in records]


def table(rows: dict[str, list[dict[str, Any]]], records: list[dict[str, Any]], scale: str, out: Path) -> str:
    published = paper_results("llama2_7b_samsum_pretrained_conversion")["rows"]
    lora = metric(rows.get("softmax", []), "rouge1")
    hedgehog = metric(rows.get("hedgehog", []), "rouge1")
    body = []
    for name, (label, key) in ROWS.items():
        found = rows.get(name, [])
        r1 = metric(found, "rouge1")
        cells = [label] + [mean_spread(metric(found, m), digits=1) or "not run" for m in ROUGE]
        cells.append(", ".join(f"s{r['seed']}: {v:.1f}" for r, v in zip(found, r1, strict=True)))
        cells.append(f"{100 * statistics.mean(r1) / statistics.mean(lora):.0f}%" if r1 and lora else "")
        cells.append("" if name == "hedgehog" or not r1 else compare_seeds(r1, hedgehog))
        cells.append(f"{statistics.mean(r['wall_time_s'] for r in found) / 60:.1f}" if found else "")
        paper = published.get(key) if key else None
        cells += ["/".join(f"{v:.1f}" for v in paper) if paper else "not in the paper"]
        cells += [f"{100 * paper[0] / published['softmax_lora'][0]:.0f}%" if paper else ""]
        body.append(cells)
    # the budget as the Hedgehog + LoRA row ran it (the zero-shot, T2R and output-MSE rows differ by name)
    config = min(
        records,
        key=lambda r: (r["attention"] != "hedgehog", r["config"]["task"]["distill_loss"] == "mse", r["seed"]),
    )["config"]
    data, task, model = config["data"], config["task"], config["model"]
    lora_cfg = model["lora"]
    hardware = sorted({r["hardware"] for r in records})
    wall = sum(r["wall_time_s"] for r in records)
    claim = published["hedgehog_lora"][0] / published["softmax_lora"][0]
    caption = (
        f"Table 11, a pretrained Llama converted to linear attention with LoRA, summarisation ({scale} scale): test "
        f"ROUGE-1/2/L F1 x100 (higher is better), mean ± std over seeds (n). Ours: {model['pretrained']} on "
        f"{data['dataset']} ({data['num_test'] or 'all'} test examples, inputs cut to {data['max_input_tokens']} "
        f"tokens, chat template {'on' if data['chat_template'] else 'off'}), greedy summaries of at most "
        f"{task['max_new_tokens']} tokens; stage 1 {task['distill_steps']} steps ({task['distill_loss']} unless "
        f"named), stage 2 {task['finetune_steps']} LoRA steps (r {lora_cfg['r']}, alpha {lora_cfg['alpha']} on "
        f"{', '.join(lora_cfg['target_modules'])}) at batch {data['batch_size']}; T2R: no stage 1, its map trains "
        f"with the adapters. '% of softmax + LoRA' is the row's mean ROUGE-1 over softmax + LoRA's; 'vs Hedgehog' "
        f"compares ROUGE-1: {DIFFERENCE_RULE}. The paper (Llama-2 7B on SAMSum): Hedgehog + LoRA keeps "
        f"{100 * claim:.0f}% of softmax + LoRA's ROUGE-1, T2R collapses. {len(records)} runs, {wall / 60:.1f} min "
        f"of run wall time in all, on {', '.join(hardware)}."
    )
    headers = [
        "model",
        "ours: ROUGE-1",
        "ours: ROUGE-2",
        "ours: ROUGE-L",
        "ours: ROUGE-1 per seed",
        "ours: % of softmax + LoRA",
        "ours: vs Hedgehog",
        "ours: min per run",
        "paper: ROUGE-1/2/L",
        "paper: % of softmax + LoRA",
    ]
    return write_tables(out, "table11", headers, body, caption)


def examples(rows: dict[str, list[dict[str, Any]]], out: Path) -> str:
    """The first ``EXAMPLES`` test examples (by id) summarised by every row's seed-0 run, with the reference."""
    firsts = {name: found[0] for name, found in rows.items() if found and found[0].get("predictions")}
    by_row = {name: {p["id"]: p for p in r["predictions"]} for name, r in firsts.items()}
    shared = set.intersection(*(set(p) for p in by_row.values())) if by_row else set()
    lines = [
        "# Example summaries (Table 11)",
        "",
        f"The first {EXAMPLES} test examples by id, summarised greedily by each row's run of the lowest seed.",
    ]
    for i, key in enumerate(sorted(shared)[:EXAMPLES], start=1):
        references = next(iter(by_row.values()))[key]["references"]
        lines += ["", f"## Example {i}: {key}", "", "**Reference:** " + " / ".join(references), ""]
        for name, (label, _) in ROWS.items():
            if name in by_row:
                text = by_row[name][key]["prediction"] or "(empty: the model ended at once)"
                lines.append(f"- **{label}** (seed {firsts[name]['seed']}): {text}")
    text = "\n".join(lines) + "\n"
    (out / "examples.md").write_text(text)
    return text


def plot_rouge(rows: dict[str, list[dict[str, Any]]], scale: str, path: Path) -> None:
    """Bars of mean ROUGE-1/2/L per row, each seed a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ROWS if rows.get(n)]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.26
    for j, m in enumerate(ROUGE):
        for i, name in enumerate(names):
            values = metric(rows[name], m)
            x = i + (j - 1) * width
            ax.bar(x, statistics.mean(values), width, color=f"C{j}", label=m if i == 0 else None)
            ax.scatter([x] * len(values), values, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(names)), [ROWS[n][0].replace(" + ", "\n+ ", 1) for n in names], fontsize=8)
    ax.set_ylabel("test F1 x100")
    ax.set_title(f"Table 11 ({scale} scale): ROUGE per row, seeds as points")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def make_tables(scale: str, records_dir: Path, out: Path) -> str:
    """The table, the examples and the figures from the records in records_dir, into out; returns the markdown."""
    records = records_with(records_dir, EXPERIMENT, "test/rouge1", scale)
    rows = grouped(records)
    out.mkdir(parents=True, exist_ok=True)
    md = table(rows, records, scale, out)
    examples(rows, out)
    plot_rouge(rows, scale, out / "rouge.png")
    plot_histories(
        {ROWS[n][0]: rows[n] for n in ROWS if n in rows and n != "zero_shot"},
        [
            ("train/distill_loss", "stage 1: distillation loss"),
            ("train/finetune_loss", "stage 2: next-token loss (LoRA)"),
        ],
        out / "curves.png",
        f"Llama conversion with LoRA ({scale} scale)",
    )
    return md


def main(argv: list[str] | None = None) -> None:
    table_main(argv, doc=__doc__, experiment=EXPERIMENT, make_tables=make_tables)


if __name__ == "__main__":
    main()
