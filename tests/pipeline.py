"""Compose the project's config in tests the one way (``hedgehog.config.compose``), writing under tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, open_dict

from hedgehog.config import compose

# an experiment in seconds (conf/debug/tiny.yaml and conf/experiment_debug/<experiment>/tiny.yaml)
TINY = ["debug=tiny"]


def compose_config(overrides: list[str], tmp_path: Path) -> DictConfig:
    """The composed config with run outputs and records (published or not) under tmp_path."""
    cfg = compose(overrides, output_dir=tmp_path / "run")
    with open_dict(cfg):
        cfg.paths.record_dir = str(tmp_path / "records")
        cfg.paths.published_dir = str(tmp_path / "published")
    return cfg


def run_train_cli(overrides: list[str]) -> None:
    """Run `python -m hedgehog.train` in a subprocess (multi-process and sweep launches need one)."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, "-m", "hedgehog.train", *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
