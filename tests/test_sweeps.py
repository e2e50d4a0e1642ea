"""Sweeps: the Optuna search runs trials and reports the best parameters."""

import pytest
import yaml

from .pipeline import TINY, run_train_cli


@pytest.mark.slow
def test_optuna_sweep_runs_trials(tmp_path):
    overrides = [
        "experiment=associative_recall",
        "sweep=hedgehog_optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "logger=csv",
        f"paths.log_dir={tmp_path}",
        *TINY,
    ]
    run_train_cli(overrides)
    summary = yaml.safe_load(
        (tmp_path / "associative_recall" / "optuna" / "optimization_results.yaml").read_text()
    )
    assert set(summary["best_params"]) == {"task.optimizer.lr", "attention.feature_map.feature_dim_half"}
    assert 0.0 <= summary["best_value"] <= 1.0
    assert len(list((tmp_path / "associative_recall" / "optuna" / "records").glob("*.json"))) == 2


def test_slurm_launcher_config_composes(tmp_path):
    """The submitit SLURM launcher config resolves against the trainer's devices."""
    from omegaconf import OmegaConf

    from hedgehog.config import compose

    cfg = compose(
        ["experiment=associative_recall", "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4"],
        with_hydra=True,
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 4 and cfg.hydra.launcher.tasks_per_node == 4
