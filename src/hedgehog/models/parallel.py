"""Fully sharded data parallel (FSDP2, ``torch.distributed.fsdp.fully_shard``) for converted models.

``trainer=fsdp`` runs Lightning's ``ModelParallelStrategy``, which hands the task a device mesh; the
conversion recipe then shards its model here: every decoder (or encoder) layer that holds a converted
attention is one FSDP unit, and the root holds the rest (embeddings, head). Parameters become DTensors
sharded over the data-parallel ranks (NCCL on GPUs, gloo on CPUs); ``full_state_dict`` gathers them
back into plain tensors for saving, so what a sharded run saves loads on one device.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.distributed.device_mesh import DeviceMesh

from hedgehog.models.conversion import attention_modules


def layer_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP shards one at a time, innermost first: every trainable feature map (stage 1 calls
    it outside the model's forward, through ``features``: as its own unit it is gathered for that call),
    then each repeated block (a layer of a ``ModuleList``) that holds a converted self-attention."""
    attentions = {id(m) for _, m in attention_modules(model)}
    units = [
        m.feature_map
        for m in model.modules()
        if isinstance(getattr(m, "feature_map", None), nn.Module)
        and any(True for _ in m.feature_map.parameters())
    ]
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
                if any(id(m) in attentions for m in block.modules()):
                    units.append(block)
    if not units:
        raise ValueError(f"found no layers with a converted attention in {type(model).__name__} to shard")
    return units


def shard(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """Shard ``model`` in place over ``mesh`` (its data-parallel dimension): one unit per layer, then the root."""
    from torch.distributed.fsdp import fully_shard

    for block in layer_units(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict as plain CPU tensors, gathered from every rank when the model is sharded."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
