"""The entry point: compose the config, instantiate, fit, test, record.

python -m hedgehog.train experiment=associative_recall attention=hedgehog seed=1
python -m hedgehog.train -m experiment=associative_recall attention=softmax,hedgehog
python -m hedgehog.train experiment=associative_recall ckpt_path=last   # resume a killed run
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hedgehog.config import conf_dir, record_dir, register_resolvers
from hedgehog.results.records import code_version, hardware, write_record
from hedgehog.tasks.callbacks import MetricHistory


def _finish_wandb(failed: bool) -> None:
    """Close the wandb run even when training failed, so the next job of a multirun starts clean."""
    if "wandb" in sys.modules:
        wandb = sys.modules["wandb"]
        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)


def _save_final_state(trainer: pl.Trainer) -> None:
    """Make last.ckpt hold the final state (periodic saves may predate the last steps)."""
    for callback in trainer.checkpoint_callbacks:
        if callback.save_last and callback.dirpath and not trainer.fast_dev_run:
            trainer.save_checkpoint(Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}.ckpt")
            return


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _history(callbacks: list) -> list[dict[str, float]] | None:
    """A copy of the metric history kept along the run (``MetricHistory``), if the run keeps one."""
    return next((list(c.history) for c in callbacks if isinstance(c, MetricHistory)), None)


def _record(
    cfg: DictConfig, trainer: pl.Trainer, started: float, metrics: dict[str, float]
) -> dict[str, Any]:
    """The fields every run record has, finished or failed."""
    return {
        "experiment": cfg.experiment_name,
        "run_name": cfg.run_name,
        "attention": cfg.attention_name,
        "scale": cfg.scale.name,
        "seed": cfg.seed,
        "tags": list(cfg.tags),
        "code_version": code_version(),
        "hardware": hardware(),
        "world_size": trainer.world_size,
        "wall_time_s": round(time.time() - started, 2),
        "global_step": trainer.global_step,
        "metrics": metrics,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _record_failure(
    cfg: DictConfig, trainer: pl.Trainer, started: float, callbacks: list, error: BaseException
) -> None:
    """A failed run (a diverged loss, a crash) leaves a record that says so (``status: failed``, the error,
    the step and the history up to it), so a sweep's table can say which cells failed instead of leaving
    them blank. Tables read finished records only (``load_records``). It never replaces a finished
    record of the same run (an earlier, successful run of this name): it then goes beside it as
    ``<name>-failed.json``."""
    record = _record(cfg, trainer, started, {})
    record["status"] = "failed"
    record["error"] = f"{type(error).__name__}: {error}"[:2000]
    history = _history(callbacks)
    if history:
        record["history"] = history
    for path in (record_dir(cfg) / f"{cfg.run_name}.json", Path(cfg.paths.output_dir) / "record.json"):
        if path.exists() and json.loads(path.read_text()).get("status") != "failed":
            path = path.with_name(f"{path.stem}-failed.json")
        write_record(path, record)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment from a composed config; return its record (also written to disk)."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    task = instantiate(cfg.task)
    # a logger or callback set to null (e.g. callbacks.progress_bar=null) is switched off
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)

    started, failed = time.time(), True
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        _save_final_state(trainer)
        metrics = _scalars(trainer.callback_metrics)  # final train/val metrics, before test resets them
        best = trainer.checkpoint_callback
        if best is not None and best.best_model_score is not None:
            metrics[f"best/{best.monitor}"] = float(best.best_model_score)
        ckpt = (
            "best"
            if best is not None and best.best_model_path and not cfg.trainer.get("fast_dev_run")
            else None
        )
        for result in trainer.test(task, datamodule=datamodule, ckpt_path=ckpt):
            metrics.update(_scalars(result))
        record = _record(cfg, trainer, started, metrics)
        if getattr(datamodule, "stats", None):  # what the data module prepared (sizes, reference levels)
            record["data"] = datamodule.stats
        history = _history(callbacks)
        if history:
            record["history"] = history
        if getattr(task, "predictions", None):  # what a generation task wrote on the test split
            record["predictions"] = task.predictions
        if trainer.is_global_zero:
            write_record(record_dir(cfg) / f"{cfg.run_name}.json", record)
            # beside the run's checkpoints too: what hedgehog-generate rebuilds the model from
            write_record(Path(cfg.paths.output_dir) / "record.json", record)
            for logger in trainer.loggers:
                if isinstance(logger, pl.loggers.WandbLogger):
                    logger.experiment.summary["record"] = {k: v for k, v in record.items() if k != "config"}
        failed = False
        return record
    except Exception as error:
        if trainer.is_global_zero:
            try:
                _record_failure(cfg, trainer, started, callbacks, error)
            except Exception as inner:  # the failure itself is what the user must see
                print(f"could not write the failed run's record: {inner!r}", file=sys.stderr)
        raise
    finally:
        _finish_wandb(failed)


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the optimized metric for sweepers."""
    os.environ.setdefault("WANDB_MODE", "offline")
    record = train(cfg)
    return record["metrics"].get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
