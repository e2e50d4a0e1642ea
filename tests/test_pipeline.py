"""The pipeline: every experiment config runs, runs resume exactly, records are written."""

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import open_dict

from hedgehog.config import compose, conf_dir, record_dir
from hedgehog.results import load_records
from hedgehog.train import train

from .pipeline import TINY, compose_config

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))
ATTENTIONS = sorted(p.stem for p in (conf_dir() / "attention").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_runs(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", *TINY], tmp_path)
    record = train(cfg)
    assert record["experiment"] == cfg.experiment_name
    assert record["global_step"] > 0
    assert all(torch.isfinite(torch.tensor(v)) for v in record["metrics"].values())
    assert [p.name for p in (tmp_path / "records").glob("*.json")] == [f"{cfg.run_name}.json"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_single_run_never_writes_into_published_records(experiment):
    """Only the reproduction sweeps (publish=true, set by make reproduce-*) write into experiments/."""
    published = conf_dir().parent / "experiments"
    for overrides in ([], ["debug=tiny"], ["scale=paper"]):
        cfg = compose([f"experiment={experiment}", *overrides])
        assert published not in record_dir(cfg).parents, overrides
        assert record_dir(cfg).is_relative_to(conf_dir().parent / "outputs")
    cfg = compose([f"experiment={experiment}", "publish=true"])
    assert record_dir(cfg) == published / cfg.experiment_name / "records" / "embedded"


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_attention_trains_in_the_pipeline(attention, tmp_path):
    cfg = compose_config(
        [
            "experiment=associative_recall",
            f"attention={attention}",
            "trainer.fast_dev_run=true",
            "logger=csv",
            *TINY,
        ],
        tmp_path,
    )
    record = train(cfg)
    assert record["attention"] == attention
    assert "test/acc" in record["metrics"]


def test_record_written_and_selectable(tmp_path):
    cfg = compose_config(
        [
            "experiment=associative_recall",
            "attention=elu1",
            "trainer.max_steps=3",
            "trainer.val_check_interval=3",
            *TINY,
        ],
        tmp_path,
    )
    train(cfg)  # default loggers: wandb (disabled in tests) and CSV
    files = list((tmp_path / "records").glob("*.json"))
    assert [f.name for f in files] == [f"{cfg.run_name}.json"]
    record = json.loads(files[0].read_text())
    assert record["global_step"] == 3 and record["scale"] == "embedded" and record["seed"] == 0
    assert record["config"]["model"]["d_model"] == 16
    assert load_records([tmp_path / "records"], experiment="associative_recall", tags=["associative_recall"])
    assert not load_records([tmp_path / "records"], experiment="other")
    assert (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").exists()


def test_the_record_carries_the_training_throughput(tmp_path):
    """train/tokens_per_s (Throughput: tokens over all ranks per second of training, validation left out)
    lands in the record's metrics and history; batches without token ids are not counted."""
    from hedgehog.tasks.callbacks import batch_tokens

    cfg = compose_config(
        [
            "experiment=associative_recall",
            "attention=elu1",
            "trainer.max_steps=14",
            "trainer.val_check_interval=7",
            "callbacks.throughput.warmup=2",
            "callbacks.throughput.every_n_steps=4",
            "data.num_train=200",  # one epoch: no epoch boundary inside the 14 steps
            "logger=csv",
            *TINY,
        ],
        tmp_path,
    )
    record = train(cfg)
    rate = record["metrics"]["train/tokens_per_s"]
    assert 0 < rate < float("inf")
    # the window opens after batch 3 and logs after batches 7 and 11: the history (every 10 steps) keeps step
    # 10's, which also says the record's history runs past the best checkpoint's step (7), from which the
    # test restores the callbacks' state (it used to cut the history back to it)
    assert [h["step"] for h in record["history"] if "train/tokens_per_s" in h] == [10]
    ids = torch.zeros(4, 16, dtype=torch.long)
    assert batch_tokens((ids, ids)) == batch_tokens({"input_ids": ids}) == 64
    assert batch_tokens((torch.zeros(4, 3, 28, 28), ids)) is None and batch_tokens(ids) is None


class Crash(pl.Callback):
    """Simulates a killed job: raises after a given number of training steps."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


def _final_weights(tmp_path: Path, crash_at: int | None) -> dict[str, torch.Tensor]:
    overrides = [
        "experiment=associative_recall",
        "attention=hedgehog",
        "trainer.max_steps=12",
        "trainer.val_check_interval=4",
        "callbacks.last.every_n_train_steps=3",
        "logger=csv",
        "data.num_train=40",  # 5 batches an epoch: the crash falls mid-epoch
        *TINY,
    ]
    cfg = compose_config(overrides, tmp_path)
    if crash_at is not None:
        with open_dict(cfg):
            cfg.callbacks.crash = {"_target_": f"{__name__}.Crash", "at_step": crash_at}
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(cfg)
        assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").exists()
        with open_dict(cfg):
            del cfg.callbacks.crash
        cfg.ckpt_path = "last"
    record = train(cfg)
    assert record["global_step"] == 12
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt["state_dict"]


def test_killed_run_resumes_without_losing_or_repeating_steps(tmp_path):
    """Crash at step 7 (last checkpoint at step 6, mid-epoch 2), resume: same weights as a clean run."""
    clean = _final_weights(tmp_path / "clean", crash_at=None)
    resumed = _final_weights(tmp_path / "resumed", crash_at=7)
    for name, value in clean.items():
        torch.testing.assert_close(resumed[name], value, msg=f"{name} differs after resume")


def test_a_failed_run_leaves_a_record_that_says_so_and_tables_skip_it(tmp_path):
    """A run that raises (here a simulated crash at step 4) publishes a record with status failed, the error
    and the step; tables read finished records only. A finished run of the same name replaces it, and a
    later failure never replaces a finished record: it goes beside it."""
    cfg = compose_config(
        [
            "experiment=associative_recall",
            "attention=elu1",
            "trainer.max_steps=6",
            "trainer.val_check_interval=3",
            "logger=csv",
            *TINY,
        ],
        tmp_path,
    )
    records = tmp_path / "records"

    def crash_at(step: int | None) -> None:
        with open_dict(cfg):
            cfg.callbacks.pop("crash", None)
            if step is not None:
                cfg.callbacks.crash = {"_target_": f"{__name__}.Crash", "at_step": step}

    crash_at(4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    failed = json.loads((records / f"{cfg.run_name}.json").read_text())
    assert failed["status"] == "failed" and failed["global_step"] == 4
    assert failed["error"] == "RuntimeError: simulated crash" and failed["metrics"] == {}
    assert json.loads((Path(cfg.paths.output_dir) / "record.json").read_text())["status"] == "failed"
    assert load_records([records]) == []
    assert [r["run_name"] for r in load_records([records], failed=True)] == [cfg.run_name]
    crash_at(None)
    train(cfg)
    assert [r["global_step"] for r in load_records([records])] == [6]
    assert load_records([records], failed=True) == []
    crash_at(2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    assert [r["global_step"] for r in load_records([records])] == [6]
    assert [r["global_step"] for r in load_records([records], failed=True)] == [2]
    assert (records / f"{cfg.run_name}-failed.json").exists()


def test_unknown_attention_lists_the_available_ones(tmp_path):
    with pytest.raises(MissingConfigException) as err:
        compose_config(["experiment=associative_recall", "attention=flash_hedgehog"], tmp_path)
    assert "hedgehog" in str(err.value) and "softmax" in str(err.value)


def test_bad_data_config_raises_clear_error(tmp_path):
    cfg = compose_config(
        ["experiment=associative_recall", "data.num_pairs=40", "trainer.fast_dev_run=true", "logger=csv"],
        tmp_path,
    )
    with pytest.raises(ValueError, match="raise vocab_size or lower num_pairs"):
        train(cfg)
