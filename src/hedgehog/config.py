"""The project's Hydra config, composed the one way: from the command line or from Python.

``python -m hedgehog.train`` composes ``conf/train.yaml`` with its overrides; ``compose`` does the same
from Python (tests, analyses, timing scripts), with the run's output folder given instead of Hydra's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from hedgehog.paths import project_root


def conf_dir() -> Path:
    """The folder of the project's Hydra configs."""
    return project_root() / "conf"


def _precision() -> str:
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


def register_resolvers() -> None:
    """Resolvers the configs use: the repository root and the precision for this machine."""
    if not OmegaConf.has_resolver("hedgehog.root"):
        OmegaConf.register_new_resolver("hedgehog.root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("hedgehog.precision"):
        OmegaConf.register_new_resolver("hedgehog.precision", _precision)


def compose(
    overrides: list[str] | tuple[str, ...] = (),
    output_dir: Path | str | None = None,
    with_hydra: bool = False,
) -> DictConfig:
    """The config ``python -m hedgehog.train <overrides>`` would run, composed from Python.

    ``output_dir`` replaces Hydra's run folder (checkpoints, logs); records still go where the
    config says (``paths.record_dir`` under outputs/, or the published folder with ``publish=true``).
    ``with_hydra`` keeps Hydra's own node (launcher, sweeper) for inspection; ``train`` needs it gone.
    """
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir) if output_dir is not None else cfg.paths.output_dir
        if not with_hydra:
            del cfg.hydra
    return cfg


def record_dir(cfg: DictConfig) -> Path:
    """Where a run writes its record: the published folder for reproduction sweeps, else outputs/."""
    return Path(cfg.paths.published_dir if cfg.get("publish") else cfg.paths.record_dir)
