"""Whole-model harness: GPT-2 (Hugging Face, random init) with SDPA or converted to Hedgehog.

Training tokens/s (bf16 autocast, fused AdamW on CUDA) at given lengths, and greedy decoding
through the Hugging Face forward loop after a prefill, SDPA with transformers' key cache (default and
static) and Hedgehog with the fixed-size ``LinearAttentionCache`` (``start_decode``, ``next_token``), and
Hedgehog's step replayed from a CUDA graph (``hedgehog.models.decode_graph.GreedyDecoder``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from experiments.efficiency.flops import CHUNK
from experiments.efficiency.render import model_markdown
from experiments.efficiency.timing import sync
from hedgehog.attention import HedgehogFeatureMap

GPT2_125M = {"n_layer": 12, "n_embd": 768, "n_head": 12}
GPT2_TINY = {"n_layer": 2, "n_embd": 64, "n_head": 4}  # CPU smoke run


def gpt2(attention: str, n_positions: int, device: str, size: dict) -> torch.nn.Module:
    """Hugging Face GPT2LMHeadModel (random init); ``hedgehog`` converts it with the project's one
    conversion, attention built as conf/attention/hedgehog.yaml builds it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from hedgehog.attention import LinearAttention
    from hedgehog.models.conversion import convert

    config = GPT2Config(n_positions=n_positions, **size)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").to(device)
    if attention == "hedgehog":
        feature_map = partial(HedgehogFeatureMap, activation="softmax", temperature=1.0)
        convert(model, partial(LinearAttention, feature_map=feature_map, chunk_size=CHUNK, check_finite=True))
    return model


def training_step(
    attention: str, length: int, tokens: int, device: str, size: dict, n_positions: int
) -> Callable[[], None]:
    """One training step of the harness's GPT-2 on ``tokens`` random tokens in rows of ``length`` (bf16
    autocast, fused AdamW on CUDA), as a closure over the model, its optimizer and the batch."""
    torch.manual_seed(0)
    model = gpt2(attention, n_positions, device, size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    ids = torch.randint(0, model.config.vocab_size, (tokens // length, length), device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def train_throughput(device: str, lengths: list[int], tokens: int, size: dict, steps: int) -> list[dict]:
    """Training tokens/s (bf16 autocast, fused AdamW on CUDA) of SDPA and Hedgehog GPT-2, same harness."""
    rows = []
    for attention in ("sdpa", "hedgehog"):
        for t in lengths:
            step = training_step(attention, t, tokens, device, size, max(lengths))
            for _ in range(2):
                step()
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            sync(device)
            step_ms = (time.perf_counter() - start) * 1e3 / steps
            row = {
                "attention": attention,
                "T": t,
                "B": tokens // t,
                "step_ms": step_ms,
                "tokens_per_s": tokens / step_ms * 1e3,
            }
            rows.append(row)
            print(
                f"train {attention:8s} T={t:>6d} {step_ms:9.1f} ms/step {row['tokens_per_s']:>10.0f} tokens/s",
                flush=True,
            )
            del step  # the model, optimizer and batch with it
    return rows


SDPA_DECODE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


DECODE_METHODS = ("sdpa", "sdpa_static", "hedgehog", "hedgehog_graph")


def start_decode(
    attention: str, context: int, batch: int, new_tokens: int, device: str, size: dict
) -> tuple[torch.nn.Module, object, torch.Tensor]:
    """The decode harness's GPT-2 (positions for ``new_tokens`` more) and its cache after a prefill of
    ``context`` random tokens, and the first greedy token. Call under no_grad, autocast and the SDPA
    backends the caller wants. ``attention``: ``sdpa`` (transformers' default, growing key cache),
    ``sdpa_static`` (its ``StaticCache``, allocated for every position up front) or ``hedgehog``
    (``LinearAttentionCache``).
    """
    from transformers import DynamicCache, StaticCache

    from hedgehog.models.cache import LinearAttentionCache

    torch.manual_seed(0)
    model = gpt2(
        "sdpa" if attention == "sdpa_static" else attention, context + new_tokens, device, size
    ).eval()
    if attention == "hedgehog":
        cache = LinearAttentionCache(model)
    elif attention == "sdpa_static":
        cache = StaticCache(config=model.config, max_cache_len=context + new_tokens)
    else:
        cache = DynamicCache(config=model.config)
    ids = torch.randint(0, model.config.vocab_size, (batch, context), device=device)
    return model, cache, next_token(model, cache, ids)


def next_token(model: torch.nn.Module, cache: object, ids: torch.Tensor) -> torch.Tensor:
    """One forward through the cache; the greedy next token (B, 1)."""
    # past_key_values: the keyword every transformers 5.x takes (later ones also say cache=)
    return model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)


@torch.no_grad()
def decode_throughput(
    device: str,
    context: int,
    batch: int,
    new_tokens: int,
    size: dict,
    methods: tuple[str, ...] = DECODE_METHODS,
) -> list[dict]:
    """Greedy decoding after a prefill of ``context``, one row per method of ``DECODE_METHODS``.

    ``sdpa`` and ``sdpa_static`` decode through the Hugging Face forward loop with transformers'
    default key cache and with its static cache; ``hedgehog`` through the same loop with the fixed-size
    ``LinearAttentionCache``; ``hedgehog_graph`` with ``hedgehog.models.decode_graph.GreedyDecoder``
    (on CUDA each step one replay of a recorded CUDA graph; on the CPU the same steps run eagerly).
    Each row reports ms per step, tokens/s, the bytes the cache holds after decoding (``cache_MB``)
    and, on CUDA, the peak memory allocated while decoding (``peak_GB``). SDPA runs without its
    cuDNN backend (``SDPA_DECODE_BACKENDS``): with a key length that grows every step it builds a
    cuDNN graph per call, 5.6 ms of host time per layer on the H200 (torch 2.11,
    experiments/efficiency/lab/decode_profile_h200.log), which would make the softmax baseline 5x slow.
    """
    from hedgehog.models.decode_graph import GreedyDecoder

    rows = []
    for method in methods:
        warmup = 2  # the first steps compile kernels; not timed
        graphed = method == "hedgehog_graph"
        with torch.autocast(device, dtype=torch.bfloat16), sdpa_kernel(SDPA_DECODE_BACKENDS):
            attention = "hedgehog" if graphed else method
            model, cache, token = start_decode(attention, context, batch, warmup + new_tokens, device, size)
            if graphed:
                decoder = GreedyDecoder(model, cache, token, warmup + new_tokens)
                decoder.run(warmup)
            else:
                for _ in range(warmup):
                    token = next_token(model, cache, token)
            sync(device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            if graphed:
                decoder.run(new_tokens)
            else:
                for _ in range(new_tokens):
                    token = next_token(model, cache, token)
            sync(device)
        step_ms = (time.perf_counter() - start) * 1e3 / new_tokens
        seen = cache.get_seq_length()
        if seen != context + warmup + new_tokens:
            raise RuntimeError(
                f"{method}: the cache saw {seen} tokens, expected {context + warmup + new_tokens}; the "
                "model did not decode from it (check the cache keyword of this transformers version)"
            )
        held = [(layer.keys, layer.values, *(getattr(layer, "state", None) or ())) for layer in cache.layers]
        cache_bytes = sum(t.numel() * t.element_size() for h in held for t in h if torch.is_tensor(t))
        row = {
            "attention": method,
            "context": context,
            "batch": batch,
            "step_ms": step_ms,
            "tokens_per_s": batch / step_ms * 1e3,
            "cache_MB": cache_bytes / 1e6,
        }
        if device == "cuda":
            row["peak_GB"] = torch.cuda.max_memory_allocated() / 1e9
        rows.append(row)
        peak = f" peak {row['peak_GB']:.2f} GB" if "peak_GB" in row else " (peak memory: CUDA only)"
        print(
            f"decode {method:14s} context={context} batch={batch} {step_ms:8.1f} ms/step "
            f"{row['tokens_per_s']:8.0f} tokens/s cache {row['cache_MB']:.2f} MB{peak}",
            flush=True,
        )
        del model, cache
    return rows


def run_model(out_dir: Path, parts: tuple[str, ...] = ("train", "decode")) -> None:
    """GPT-2 125M training and decoding on CUDA (a tiny GPT-2 on the CPU, to check the harness) ->
    out_dir/model_<device>[_<parts>].{json,md}."""
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        size, lengths, tokens, steps, contexts, batch, new = (
            GPT2_125M,
            [1024, 8192, 32768],
            65536,
            5,
            [1024, 32768],
            8,
            16,
        )
        record = {
            "device": torch.cuda.get_device_name(),
            "note": "GPT-2 125M: "
            + " and ".join(
                {"train": "65,536 tokens per training step", "decode": "greedy decoding at batch 8"}[p]
                for p in parts
            ),
        }
    else:
        size, lengths, tokens, steps, contexts, batch, new = GPT2_TINY, [64, 128], 256, 2, [32, 128], 2, 4
        record = {
            "device": "CPU",
            "note": "No GPU: a 2-layer, 64-wide GPT-2 at small sizes, to check the harness only",
        }
    print(record["note"], flush=True)
    if parts != ("decode",):
        record["train"] = train_throughput(device, lengths, tokens, size, steps)
    # two contexts: the linear state's per-token time should not depend on the context
    if "decode" in parts:
        record["decode"] = [row for c in contexts for row in decode_throughput(device, c, batch, new, size)]
    stem = "model_" + ("cpu" if not cuda else record["device"].split()[-1].lower())
    if parts != ("train", "decode"):
        stem += "_" + "_".join(parts)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(record, indent=1))
    (out_dir / f"{stem}.md").write_text(model_markdown(record))
    print(model_markdown(record))
