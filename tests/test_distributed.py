"""Multi-device: the same experiment runs with strategy=ddp on 2 CPU processes (gloo)."""

import json
from functools import partial

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


TINY_LLAMA = (
    "+model.config={vocab_size:4096,hidden_size:32,intermediate_size:64,num_hidden_layers:2,"
    "num_attention_heads:4,num_key_value_heads:2,max_position_embeddings:64}"
)


@pytest.mark.slow
def test_fsdp_conversion_of_a_tiny_llama_on_two_cpu_processes(tmp_path):
    """trainer=fsdp (FSDP2 through Lightning's ModelParallelStrategy) runs both stages of the conversion
    recipe sharded over 2 gloo processes, and the feature maps it saves load into an unsharded model."""
    maps = tmp_path / "maps.pt"
    overrides = [
        "experiment=gpt2_convert",
        "debug=tiny",
        "attention=hedgehog",
        "trainer=fsdp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "model.model_type=llama",
        "~model.config",
        TINY_LLAMA,
        f"task.save_feature_maps={maps}",
        f"paths.record_dir={tmp_path / 'records'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    run_train_cli(overrides)
    (record_file,) = (tmp_path / "records").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["world_size"] == 2 and record["global_step"] == 4
    assert record["metrics"]["test/distill_steps"] == 2 and record["metrics"]["test/ppl"] > 1.0
    from transformers import LlamaConfig

    from hedgehog.attention import HedgehogFeatureMap, LinearAttention
    from hedgehog.models.conversion import feature_map_parameters, load_feature_maps
    from hedgehog.models.pretrained import causal_lm

    config = LlamaConfig(
        vocab_size=4096,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    ).to_dict()
    model = causal_lm(
        partial(LinearAttention, feature_map=HedgehogFeatureMap), config=config, model_type="llama"
    )
    saved = torch.load(maps, weights_only=True)
    assert all(type(v) is torch.Tensor for v in saved.values())  # gathered, not sharded DTensors
    load_feature_maps(model, saved)
    trained = feature_map_parameters(model)
    assert any(
        not torch.equal(p, torch.eye(*p.shape[-2:]).expand_as(p)) for n, p in trained.items() if "weight" in n
    )
