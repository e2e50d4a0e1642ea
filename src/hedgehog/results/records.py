"""Run records: one JSON file per finished run, the only thing table scripts read.

A record holds the final metrics and the identity of the run (experiment, attention,
scale, seed, tags, code version, hardware) plus its resolved config, so a table can
select runs by experiment, tag and code version without hard-coded run ids.
"""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from hedgehog.paths import project_root


def code_version(root: Path | None = None) -> str:
    """The git commit of the code (with '-dirty' if the tree had changes), or 'unknown'."""
    root = root or project_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def hardware() -> str:
    """A short description of where the run happened: GPU name, or CPU and its cores."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.machine()} x{torch.get_num_threads()} threads"


def write_record(path: Path, record: dict[str, Any]) -> Path:
    """Write one record as JSON (metrics must be plain floats)."""
    for key in ("experiment", "run_name", "metrics"):
        if key not in record:
            raise ValueError(f"a run record needs {key!r}; got keys {sorted(record)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def load_records(
    paths: Iterable[Path | str],
    experiment: str | None = None,
    tags: Iterable[str] = (),
    version: str | None = None,
    failed: bool = False,
) -> list[dict[str, Any]]:
    """Records from files or folders (searched recursively), filtered by experiment, tags, version.

    Records of failed runs (``status: failed``, written by ``hedgehog.train`` when a run raises) are left
    out, or are the only ones returned with ``failed=True``."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.rglob("*.json")) if p.is_dir() else [p])
    wanted = set(tags)
    records = []
    for f in files:
        record = json.loads(f.read_text())
        if experiment and record.get("experiment") != experiment:
            continue
        if wanted and not wanted <= set(record.get("tags", [])):
            continue
        if version and record.get("code_version", "").removesuffix("-dirty") != version:
            continue
        if (record.get("status") == "failed") != failed:
            continue
        records.append(record)
    return records


def load_wandb_records(
    project: str, experiment: str, tags: Iterable[str] = (), entity: str | None = None
) -> list[dict[str, Any]]:
    """The same records from wandb runs (online): the run's summary holds the record fields."""
    import wandb

    path = f"{entity}/{project}" if entity else project
    filters: dict[str, Any] = {"group": experiment, "state": "finished"}
    if tags:
        filters["tags"] = {"$all": list(tags)}
    records = []
    for run in wandb.Api().runs(path, filters=filters):
        record = run.summary.get("record")
        if record:
            records.append(dict(record))
    return records
