"""Speed and memory of the converted Llama-2 7B architecture on one GPU, random weights: softmax, Hedgehog, hybrid.

    python -m experiments.llama_samsum.lab.h200_speed                    # Llama-2 7B's shape, bf16 (an H200: < 8 min)
    python -m experiments.llama_samsum.lab.h200_speed --out $OUT/h200_speed.md
    python -m experiments.llama_samsum.lab.h200_speed --shape tiny       # a CPU smoke run of the same code

The model is Hugging Face's LlamaForCausalLM of Llama-2 7B's shape (32 layers, width 4,096, 32 heads of
128, MLP 11,008, vocabulary 32,000; 6.7B parameters) with random weights in bfloat16, converted the
project's one way (``hedgehog.models.conversion.convert``) to each attention as conf/attention/<name>.yaml
builds it: ``softmax`` (SDPA: FlashAttention), ``hedgehog`` (Triton kernels: fused when its row in
``h200_speed_h200.md`` was measured; since the ninth session, at this head dim of 128, the map kernels
writing the features once and the generic chunked kernels) and ``hedgehog_window`` (the sliding-window
hybrid, window 64: its Triton kernels, ``h200_speed_h200_window.md``; the chunked PyTorch form in
``h200_speed_h200.md``),
with the paper's LoRA (r 8, alpha 16 on q, k, v, o; only the adapters train).

Training: forward and backward (bf16 autocast; AdamW over the adapters) at T = 1,024 and 4,096 with
8,192 tokens a step; tokens/s (median of the timed steps) and peak memory (``max_memory_allocated``).
Decoding: a prompt of 1,024 or 32,768 random tokens at batch 1 and 8, then greedy ``generate``: the
prefill's seconds, milliseconds per new token (median over the steps after the first), tokens/s, and the
cache's bytes after the prompt (softmax: transformers' key/value cache, grown with the context;
Hedgehog: the fixed-size ``LinearAttentionCache``; the hybrid: the same plus its last 63 keys and values).
The softmax model decodes as transformers runs it (the conversion removed, SDPA with its key cache).

Each configuration catches running out of memory and reports it (softmax at 32k x 8 needs a 128 GiB
cache); ``--budget-s`` skips what would start after that many seconds, so the run ends in time.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from hydra.utils import instantiate
from transformers import LlamaConfig, LlamaForCausalLM, StoppingCriteria, StoppingCriteriaList

from hedgehog.config import compose
from hedgehog.models.conversion import convert, revert
from hedgehog.models.lora import add_lora

SHAPES = {
    "llama2-7b": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 32768,
    },
    "tiny": {
        "vocab_size": 512,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
    },
}
ATTENTIONS = ("softmax", "hedgehog", "hedgehog_window")
GB = 1e9


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / GB if device == "cuda" else None


def attention(name: str):
    """The attention constructor of conf/attention/<name>.yaml, as the llama_samsum experiment builds it."""
    return instantiate(compose(["experiment=llama_samsum", f"attention={name}"]).attention)


def train_row(model, name: str, length: int, tokens: int, steps: int, device: str) -> dict:
    """Forward + backward with LoRA at ``length`` tokens, ``tokens`` per step: tokens/s and peak memory."""
    batch = max(1, tokens // length)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), device=device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    model.train()
    times = []
    free(device)
    for i in range(steps + 2):  # two warm-up steps (Triton compiles, allocator settles)
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "attention": name,
        "T": length,
        "batch": batch,
        "tokens_per_s": batch * length / seconds,
        "step_s": seconds,
        "peak_gb": peak_gb(device),
        "trainable": sum(p.numel() for p in trainable),
    }


class StepTimes(StoppingCriteria):
    """Records the time at each generated token (after the device finished it); never stops generation."""

    def __init__(self, device: str) -> None:
        self.device, self.times = device, []

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        sync(self.device)
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def cache_bytes(cache) -> int:
    """Bytes of a generation cache: LinearAttentionCache's states, or every key and value tensor."""
    if hasattr(cache, "nbytes"):
        return cache.nbytes()
    return sum(
        t.numel() * t.element_size()
        for layer in cache.layers
        for t in (layer.keys, layer.values)
        if isinstance(t, torch.Tensor)
    )


def decode_row(model, name: str, context: int, batch: int, new_tokens: int, device: str) -> dict:
    """Prefill ``context`` random tokens at ``batch``, then ``new_tokens`` greedy ones: times and cache bytes."""
    model.eval()
    ids = torch.randint(0, model.config.vocab_size, (batch, context), device=device)
    steps = StepTimes(device)
    free(device)
    sync(device)
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
            stopping_criteria=StoppingCriteriaList([steps]),
            return_dict_in_generate=True,
        )
    per_token = statistics.median(b - a for a, b in zip(steps.times, steps.times[1:], strict=False))
    return {
        "attention": name,
        "context": context,
        "batch": batch,
        "prefill_s": steps.times[0] - start,
        "ms_per_token": 1e3 * per_token,
        "tokens_per_s": batch / per_token,
        "cache_mb": cache_bytes(out.past_key_values) / 2**20,
        "peak_gb": peak_gb(device),
    }


def guarded(rows: list[dict], key: dict, fn, deadline: float, device: str) -> None:
    """Run one configuration; out of memory or out of time, record why instead of its numbers."""
    if time.perf_counter() > deadline:
        rows.append({**key, "status": "skipped (time budget)"})
    else:
        try:
            rows.append({**fn(), "status": "ok"})
        except torch.OutOfMemoryError:
            rows.append({**key, "status": "out of memory"})
    free(device)
    print(json.dumps(rows[-1]), flush=True)


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "" if value is None else format(value, fmt)


def markdown(train: list[dict], decode: list[dict], title: str, tokens: int) -> str:
    lines = [title, "", f"Training (forward + backward, LoRA only trainable, {tokens:,} tokens a step):", ""]
    lines += [
        "| attention | T | batch | tokens/s | step (s) | peak memory (GB) | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in train:
        cells = [r["attention"], f"{r['T']:,}", str(r.get("batch", ""))]
        cells += [_cell(r, "tokens_per_s", ",.0f"), _cell(r, "step_s", ".3f"), _cell(r, "peak_gb", ".1f")]
        lines.append("| " + " | ".join([*cells, r["status"]]) + " |")
    lines += ["", "Decoding (greedy, after a prompt of the given context):", ""]
    lines += [
        "| attention | context | batch | prefill (s) | ms / token | tokens/s | cache (MB) | peak memory (GB) | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in decode:
        cells = [r["attention"], f"{r['context']:,}", str(r["batch"]), _cell(r, "prefill_s", ".2f")]
        cells += [
            _cell(r, "ms_per_token", ".1f"),
            _cell(r, "tokens_per_s", ",.0f"),
            _cell(r, "cache_mb", ",.1f"),
        ]
        cells += [_cell(r, "peak_gb", ".1f")]
        lines.append("| " + " | ".join([*cells, r["status"]]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--tokens", type=int, default=8192, help="training tokens per step")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (after 2 warm-up steps)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 32768])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--attentions", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no configuration after this")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the tables (markdown) and rows (json)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    deadline = started + args.budget_s
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[args.shape], attn_implementation="sdpa", use_cache=False)
    with torch.device(args.device):
        model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    built = time.perf_counter() - started
    print(
        f"built {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters in {built:.0f} s",
        flush=True,
    )
    train, decode = [], []
    lora = False
    for name in args.attentions:
        convert(model, attention(name))
        if not lora:  # LoRA wraps the projections once; conversions come and go beneath it
            add_lora(model, r=8, alpha=16)
            lora = True
        for length in args.lengths:
            run = partial(train_row, model, name, length, args.tokens, args.steps, args.device)
            guarded(train, {"attention": name, "T": length}, run, deadline, args.device)
        if name == "softmax":  # decode as transformers does: SDPA with its key cache
            revert(model)
        for context in args.contexts:
            for batch in args.batches:
                run = partial(decode_row, model, name, context, batch, args.new_tokens, args.device)
                key = {"attention": name, "context": context, "batch": batch}
                guarded(decode, key, run, deadline, args.device)
        if name != "softmax":
            revert(model)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    title = (
        f"Llama-2 7B's shape ({args.shape}), random weights in bfloat16, LoRA r 8 on q, k, v, o, on {device}; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    table = markdown(train, decode, title, args.tokens)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
        args.out.with_suffix(".json").write_text(
            json.dumps({"train": train, "decode": decode}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
