"""Table helpers shared by the experiments' table scripts: paper numbers, markdown, LaTeX."""

from __future__ import annotations

import argparse
import statistics
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from hedgehog.paths import project_root
from hedgehog.results.records import load_records


def paper_results(section: str) -> dict[str, Any]:
    """One section of the published numbers (with their provenance) from experiments/paper_results.yaml."""
    path = project_root() / "experiments" / "paper_results.yaml"
    results = yaml.safe_load(path.read_text())
    if section not in results:
        raise KeyError(f"no section {section!r} in {path}; sections: {sorted(results)}")
    return results[section]


def published_records(experiment: str, scale: str) -> Path:
    """The folder the reproduction sweeps of an experiment publish into: experiments/<experiment>/records/<scale>."""
    return project_root() / "experiments" / experiment / "records" / scale


def records_with(records_dir: Path, experiment: str, metric: str, scale: str) -> list[dict[str, Any]]:
    """The published records of an experiment (tagged with its name) that hold ``metric``; none is an
    error that names the command making them (``make reproduce-<experiment, dashed> SCALE=<scale>``)."""
    found = (
        load_records([records_dir], experiment=experiment, tags=[experiment]) if records_dir.exists() else []
    )
    records = [r for r in found if metric in r["metrics"]]
    if not records:
        raise SystemExit(
            f"no {experiment} records with {metric} under {records_dir}; "
            f"run `make reproduce-{experiment.replace('_', '-')} SCALE={scale}`"
        )
    return records


def table_main(
    argv: list[str] | None,
    *,
    doc: str,
    experiment: str,
    make_tables: Callable[[str, Path, Path], object],
) -> None:
    """The command line every experiment's make_table shares: ``--scale`` (default embedded), ``--records``
    (default the scale's published records) and ``--out`` (default experiments/<experiment>/tables/<scale>);
    calls ``make_tables(scale, records, out)`` and prints what it returns, if anything."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--scale", default="embedded")
    parser.add_argument(
        "--records", type=Path, default=None, help="default: records/<scale> of the experiment"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: tables/<scale> of the experiment")
    args = parser.parse_args(argv)
    records = args.records or published_records(experiment, args.scale)
    out = args.out or project_root() / "experiments" / experiment / "tables" / args.scale
    text = make_tables(args.scale, records, out)
    if text:
        print(text)


def mean_spread(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """'mean ± std (n)' of values times scale; a single value has no spread."""
    if not values:
        return ""
    xs = [v * scale for v in values]
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f} (n=1)"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f} (n={len(xs)})"


SIGNIFICANCE = 0.05
DIFFERENCE_RULE = (
    "a difference between two rows is claimed only when both have 2 or more seeds and Welch's two-sided "
    f"t-test gives p < {SIGNIFICANCE} (against a row with no seed dependence: a one-sample t-test); with 2 "
    "seeds per row only large, consistent gaps pass; p-values are not corrected for the number of comparisons"
)


def compare_seeds(a: Sequence[float], b: Sequence[float], b_fixed: bool = False) -> str:
    """Whether row a is established as higher or lower than row b, by ``DIFFERENCE_RULE``; with its p-value.

    ``b_fixed``: b does not depend on a seed (one exact value), so a is tested against that value.
    """
    from scipy import stats  # here, not at the top: the training entry point imports this package

    if b_fixed and len(b) != 1:
        raise ValueError(f"a row with no seed dependence has one value, got {len(b)}")
    if len(a) < 2 or (len(b) < 2 and not b_fixed):
        return "not established (n < 2)"
    with warnings.catch_warnings():  # nearly equal seeds warn of precision loss; the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_1samp(a, b[0]) if b_fixed else stats.ttest_ind(a, b, equal_var=False)
    p = float(test.pvalue)
    if p != p:  # NaN: no spread in either row, nothing to test against
        return "not established (no seed spread)"
    if p >= SIGNIFICANCE:
        return f"not established (p = {p:.2f})"
    direction = "higher" if statistics.mean(a) > statistics.mean(b) else "lower"
    return f"{direction} (p {'< 0.001' if p < 0.001 else f'= {p:.3f}'})"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def latex_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str) -> str:
    def esc(cell: Any) -> str:
        text = "" if cell is None else str(cell)
        return text.replace("±", r"$\pm$").replace("%", r"\%").replace("_", r"\_")

    body = " \\\\\n".join(" & ".join(esc(c) for c in row) for row in rows)
    return (
        "\\begin{table}[t]\n\\centering\n"
        f"\\begin{{tabular}}{{l{'c' * (len(headers) - 1)}}}\n\\toprule\n"
        + " & ".join(esc(h) for h in headers)
        + " \\\\\n\\midrule\n"
        + body
        + " \\\\\n\\bottomrule\n\\end{tabular}\n"
        + f"\\caption{{{esc(caption)}}}\n\\end{{table}}\n"
    )


def write_tables(
    folder: Path, stem: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str
) -> str:
    """Write <stem>.md and <stem>.tex into folder; return the markdown."""
    folder.mkdir(parents=True, exist_ok=True)
    md = markdown_table(headers, rows)
    (folder / f"{stem}.md").write_text(f"{caption}\n\n{md}")
    (folder / f"{stem}.tex").write_text(latex_table(headers, rows, caption))
    return md
