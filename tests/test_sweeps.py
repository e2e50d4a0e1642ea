"""Sweeps: the Optuna search runs trials and reports the best parameters."""

import pytest
import yaml

from .pipeline import TINY_AR, run_train_cli


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
        *TINY_AR,
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
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from hedgehog.train import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=associative_recall",
                "hydra/launcher=slurm",
                "trainer=ddp",
                "trainer.devices=4",
            ],
            return_hydra_config=True,
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 4 and cfg.hydra.launcher.tasks_per_node == 4
