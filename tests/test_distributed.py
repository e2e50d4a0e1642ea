"""Multi-device: the same experiment runs with strategy=ddp on 2 CPU processes (gloo)."""

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from hedgehog.data.loading import ResumableLoader

from .pipeline import TINY, run_train_cli


def test_loader_shards_are_disjoint_and_cover_the_epoch():
    data = TensorDataset(torch.arange(40))
    shards = [ResumableLoader(data, batch_size=4, seed=1, rank=r, world_size=2) for r in range(2)]
    seen = [torch.cat([b[0] for b in shard]) for shard in shards]
    assert len(shards[0]) == 5
    assert set(seen[0].tolist()).isdisjoint(seen[1].tolist())
    assert sorted(torch.cat(seen).tolist()) == list(range(40))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    overrides = [
        "experiment=associative_recall",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "logger=csv",
        f"paths.record_dir={tmp_path / 'records'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *TINY,
    ]
    run_train_cli(overrides)
    (record_file,) = (tmp_path / "records").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["world_size"] == 2
    assert record["global_step"] == 4
    assert record["config"]["trainer"]["strategy"] == "ddp"
