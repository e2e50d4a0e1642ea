"""Figures from run records: curves drawn from the metric history a record keeps."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def history_curve(record: dict[str, Any], metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric in a record's history (empty if the run did not keep it)."""
    points = [(h["step"], h[metric]) for h in record.get("history", []) if metric in h]
    return [s for s, _ in points], [v for _, v in points]


def plot_histories(
    groups: Mapping[str, Sequence[dict[str, Any]]],
    panels: Sequence[tuple[str, str]],
    path: Path,
    title: str,
    log_y: bool = True,
) -> None:
    """One panel per (metric, y label); one line per group (mean over its records at each step), seeds faint.

    ``groups``: label -> the records of one row (its seeds).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], panels, strict=True):
        for i, (label, records) in enumerate(groups.items()):
            color = f"C{i}"
            curves = [history_curve(r, metric) for r in records]
            curves = [c for c in curves if c[0]]
            if not curves:
                continue
            for steps, values in curves:
                ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            steps = sorted(set.intersection(*(set(s) for s, _ in curves)))
            means = [statistics.mean(dict(zip(*c, strict=True))[s] for c in curves) for s in steps]
            ax.plot(steps, means, color=color, marker="o", markersize=2.5, label=f"{label} (n={len(curves)})")
        ax.set(xlabel="training step", ylabel=ylabel)
        if log_y:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
