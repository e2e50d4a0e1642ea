"""Compose the project's Hydra config in tests, the way `python -m hedgehog.train` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from hedgehog.train import CONF_DIR, register_resolvers

TINY_AR = [
    "data.num_train=64",
    "data.num_val=32",
    "data.num_test=32",
    "data.batch_size=8",
    "data.num_pairs=2",
    "data.seq_len=16",
    "model.d_model=16",
    "model.num_heads=2",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
]


def compose_config(overrides: list[str], tmp_path: Path) -> DictConfig:
    """The composed config with outputs and records redirected under tmp_path."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.record_dir = str(tmp_path / "records")
        del cfg.hydra
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
