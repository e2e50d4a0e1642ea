"""Run records of the benchmark: merging several runs of one device into one table, selecting lengths.

A sweep record holds ``rows`` (one per shape, length and method); a whole-model record holds
``train`` and/or ``decode`` rows. The committed records of a device live in ``records/<device>/``:
the sweep runs that make one table are named ``<stem>_<letter>.json`` and merged in name order.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.efficiency.attention_bench import CORRECTNESS_KEYS, METHODS, SHAPES

RUN_NAMES = "ABCDEFGHIJ"  # the letters the merged table gives its runs


def merge_records(records: list[dict]) -> dict:
    """One record from several runs: a later run's row replaces an earlier one of the same shape, T, method.

    ``runs`` keeps every run's date, software, ceilings, correctness check, source and the rows it
    supplied, so each cell's run is known; the first record gives device, stem and dtype.
    """
    if len(records) == 1:
        return records[0]
    if len(records) > len(RUN_NAMES):
        raise ValueError(f"at most {len(RUN_NAMES)} records can be merged, got {len(records)}")
    devices = {r["device"] for r in records}
    if len(devices) > 1:
        raise ValueError(f"records from different devices cannot be merged into one table: {sorted(devices)}")
    per_run = ("date", "software", "ceilings", *CORRECTNESS_KEYS.values(), "source", "note")
    merged = {k: v for k, v in records[0].items() if k not in (*per_run, "rows", "runs")}
    rows: dict[tuple, dict] = {}
    runs = []
    for i, rec in enumerate(records):
        for row in rec["rows"]:
            rows[(row["shape"], row["T"], row["method"])] = {**row, "run": i}
        runs.append({k: rec[k] for k in per_run if k in rec})
    for i, run in enumerate(runs):
        run["rows"] = sorted(f"{s} {t} {m}" for (s, t, m), row in rows.items() if row["run"] == i)
    order = {s: n for n, s in enumerate(SHAPES)}
    merged["rows"] = sorted(
        rows.values(), key=lambda r: (order.get(r["shape"], 99), r["T"], METHODS.index(r["method"]))
    )
    merged["runs"] = runs
    return merged


def select_shapes(table: dict, wanted: list[str], lengths: str) -> dict:
    """The wanted shapes of ``table``, each with only the ``lengths`` asked for (all when empty)."""
    unknown = [s for s in wanted if s not in table]
    if unknown:
        raise SystemExit(f"--shapes: unknown {unknown}; choose from {list(table)}")
    keep = {int(x) for x in lengths.split(",") if x} if lengths else None
    shapes = {
        s: {**table[s], "lengths": [t for t in table[s]["lengths"] if keep is None or t in keep]}
        for s in wanted
    }
    shapes = {s: cfg for s, cfg in shapes.items() if cfg["lengths"]}
    if not shapes:
        raise SystemExit(
            f"--lengths {lengths}: the shapes' lengths are {[table[s]['lengths'] for s in wanted]}"
        )
    return shapes


def load_device_records(folder: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """A device folder's records: the merged sweep record per stem, and the whole-model records by file stem.

    Sweep records (with ``rows``) of one ``stem`` are merged in file-name order, so a later run
    (``results_h200_e.json``) replaces an earlier one's cells (``results_h200_a.json``).
    """
    sweeps: dict[str, list[dict]] = {}
    models: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if "rows" in record:
            sweeps.setdefault(record["stem"], []).append(record)
        elif "train" in record or "decode" in record:
            models[path.stem] = record
        else:
            raise ValueError(
                f"{path}: expected a sweep record (key 'rows') or a whole-model record ('train' or "
                f"'decode'), found keys {sorted(record)}; move other files out of the records folder"
            )
    return {stem: merge_records(runs) for stem, runs in sweeps.items()}, models
