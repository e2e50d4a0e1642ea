"""DDP scaling of GPT-2 from scratch with Hedgehog attention: tokens/s and loss curves at 1, 2, ..., N GPUs.

Reads the records `lab/multi_gpu.sh` writes (one run per GPU count, the same global batch, the same seed)
and prints, per GPU count, the training throughput (``train/tokens_per_s``, over all ranks, validation left
out), the speed-up over one GPU and the scaling efficiency (speed-up / GPUs), and the final training and
validation loss; draws the training-loss curves of all counts in one figure (they should agree within
seed noise: the global batch is the same).

    python -m experiments.gpt2_wt103.lab.ddp_scaling RECORDS_DIR [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hedgehog.results import load_records, markdown_table, plot_histories


def scaling_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """One row per GPU count (world size), fewest first; the first count is the speed-up's reference."""
    by_size = {r["world_size"]: r for r in records}
    if len(by_size) != len(records):
        raise ValueError("expected one record per world size; found several runs of the same size")
    missing = [n for n, r in by_size.items() if "train/tokens_per_s" not in r["metrics"]]
    if missing:
        raise ValueError(
            f"records of world sizes {missing} hold no train/tokens_per_s (runs shorter than its warm-up?)"
        )
    sizes = sorted(by_size)
    first = by_size[sizes[0]]["metrics"]["train/tokens_per_s"]
    rows = []
    for n in sizes:
        m = by_size[n]["metrics"]
        speedup = m["train/tokens_per_s"] / first
        rows.append(
            [
                str(n),
                f"{by_size[n]['config']['data']['batch_size'] * n}",
                f"{m['train/tokens_per_s']:,.0f}",
                f"{speedup:.2f}x",
                f"{100 * speedup * sizes[0] / n:.0f}%",
                f"{m.get('train/loss', float('nan')):.3f}",
                f"{m.get('val/loss', float('nan')):.3f}",
            ]
        )
    return rows


HEADERS = ["GPUs", "global batch", "tokens/s", "speed-up", "efficiency", "final train loss", "final val loss"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("records", type=Path)
    parser.add_argument(
        "--out", type=Path, default=None, help="where scaling.md and curves.png go (default: records)"
    )
    args = parser.parse_args(argv)
    records = load_records([args.records], experiment="gpt2_wt103")
    if not records:
        raise SystemExit(f"no gpt2_wt103 records under {args.records}; run lab/multi_gpu.sh first")
    out = args.out or args.records
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(HEADERS, scaling_rows(records))
    hardware = sorted({r["hardware"] for r in records})
    text = f"DDP scaling, GPT-2 from scratch with Hedgehog attention ({', '.join(hardware)}):\n\n{table}"
    (out / "scaling.md").write_text(text)
    print(text)
    plot_histories(
        {f"{r['world_size']} GPU(s)": [r] for r in sorted(records, key=lambda r: r["world_size"])},
        [("train/loss", "training loss"), ("train/tokens_per_s", "tokens/s (all ranks)")],
        out / "curves.png",
        "DDP: the same global batch at each GPU count",
    )


if __name__ == "__main__":
    main()
