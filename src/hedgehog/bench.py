"""Attention efficiency benchmark: SDPA softmax, fla, the PyTorch reference and the fused kernels.

One process, causal attention, forward + backward, a fixed number of tokens per call
(B = tokens / T) at each length T, for two shapes: GPT-2 (H=12, D=64, F=128, 131,072 tokens)
and Llama-2 (H=32, D=128, F=256, 65,536 tokens). Before any timing, the fused kernels are
checked on the GPU against the float64 reference (outputs and every gradient); timings of a
failed check are not recorded. Ceilings (device copy bandwidth, bf16 matmul rate) are
measured in the same run; FLOPs and bytes of linear attention are counted here (below).

    python -m hedgehog.bench                 # GPU: full sweep -> experiments/efficiency/
    python -m hedgehog.bench --table-only    # regenerate the markdown table from the JSON
    python -m hedgehog.bench --model         # whole GPT-2 (HF, converted by hedgehog.models.conversion):
                                             # training tokens/s at 1k and 8k, decoding at 32k x 8

On a machine without a GPU it times the PyTorch reference at small sizes and says so.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from hedgehog.attention import HedgehogFeatureMap, chunked_linear_attention, quadratic_linear_attention

OUT_DIR = Path("experiments/efficiency")
SHAPES = {
    "gpt2": {
        "H": 12,
        "D": 64,
        "tokens": 131072,
        "lengths": [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072],
    },
    "llama2": {"H": 32, "D": 128, "tokens": 65536, "lengths": [2048, 4096, 8192, 16384, 32768]},
}
CPU_SHAPES = {
    "gpt2": {"H": 12, "D": 64, "tokens": 4096, "lengths": [256, 512, 1024]},
    "llama2": {"H": 32, "D": 128, "tokens": 2048, "lengths": [256, 512, 1024]},
}
CHUNK = 64
METHODS = ("sdpa", "fla", "reference", "fused")


# ---------------------------------------------------------------- counting


def linear_attention_flops(b: int, h: int, t: int, d: int, f: int) -> float:
    """Useful FLOPs of causal Hedgehog attention fwd+bwd, chunked form (no recomputation).

    Per token and head, with chunk C, feature dim F = 2 D', value dim D:
    forward = q, k projections 2 * 2 D D' + intra-chunk scores 2 C F and their product with
    v 2 C D + inter-chunk read 2 F D + state update 2 F D; backward = twice the attention
    products, plus the projections' input and weight gradients 2 * 2 * 2 D D'.
    """
    dp = f // 2
    attention = 2 * CHUNK * f + 2 * CHUNK * d + 4 * f * d
    per_token = 4 * d * dp + attention + 2 * attention + 8 * d * dp
    return float(b * h * t * per_token)


def softmax_attention_flops(b: int, h: int, t: int, d: int) -> float:
    """FlashAttention's count: causal forward 2 T^2 D per head, backward 2.5x forward."""
    return 3.5 * 2.0 * b * h * t * t * d


def attention_bytes(b: int, h: int, t: int, d: int, elem: int = 2) -> float:
    """Fewest bytes fwd+bwd must move: read q, k, v, write o; read q, k, v, do, write dq, dk, dv."""
    return float(11 * b * h * t * d * elem)


# ---------------------------------------------------------------- timing


def _timer(device: str) -> Callable[..., float]:
    """Median milliseconds of fn: triton.testing.do_bench on CUDA, wall clock on CPU.

    Gradients of ``grads`` are reset before each call, outside the timed region.
    """
    if device == "cuda":
        import triton

        def cuda_time(fn: Callable[[], object], grads: list[torch.Tensor]) -> float:
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            once = (time.perf_counter() - start) * 1e3
            warmup, rep = (1, max(1, int(3 * once))) if once > 200 else (25, 200)  # slow: few repeats
            return triton.testing.do_bench(
                fn, warmup=warmup, rep=rep, grad_to_none=grads, return_mode="median"
            )

        return cuda_time

    def cpu_time(fn: Callable[[], object], grads: list[torch.Tensor]) -> float:
        times = []
        for _ in range(4):
            for x in grads:
                x.grad = None
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return sorted(times[1:])[1]

    return cpu_time


def _copy_ms(n: int) -> float:
    import triton

    x = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    return triton.testing.do_bench(lambda: y.copy_(x), warmup=10, rep=100, return_mode="median")


def _matmul_ms(n: int) -> float:
    import triton

    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    return triton.testing.do_bench(lambda: a @ b, warmup=10, rep=100, return_mode="median")


def measure_ceilings() -> dict[str, float]:
    """Device copy bandwidth (bytes read + written, 2 GiB buffers) and bf16 matmul rate, random data."""
    n_copy, n_mm = 2**30, 8192
    return {
        "copy_GBps": 2 * 2 * n_copy / _copy_ms(n_copy) / 1e6,
        "bf16_matmul_TFLOPs": 2 * n_mm**3 / _matmul_ms(n_mm) / 1e9,
    }


# ---------------------------------------------------------------- methods


def _hedgehog_map(h: int, d: int, device: str) -> HedgehogFeatureMap:
    fmap = HedgehogFeatureMap(h, d).to(device)
    with torch.no_grad():
        for p in fmap.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return fmap


def make_forward(method: str, q, k, v, fmap) -> Callable[[], torch.Tensor] | None:
    """The forward of a method on (B, H, T, D) inputs, returning (B, H, T, D); None if unavailable."""
    params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
    if method == "sdpa":
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if method == "reference":

        def reference():
            fq, fk = fmap(q, k)
            return chunked_linear_attention(fq, fk, v, chunk_size=CHUNK)[0]

        return reference
    if method == "fused":
        from hedgehog.kernels import hedgehog_attention

        return lambda: hedgehog_attention(q, k, v, *params)[0]
    if method == "fla":
        try:
            from fla.ops.linear_attn import chunk_linear_attn
        except ImportError:
            return None

        def fla():
            # fla's layout is (B, T, H, F); the feature map runs in PyTorch, fla normalises
            fq, fk = fmap(q, k)
            out, _ = chunk_linear_attn(
                fq.transpose(1, 2).to(q.dtype),
                fk.transpose(1, 2).to(q.dtype),
                v.transpose(1, 2),
                scale=1.0,
                normalize=True,
            )
            return out.transpose(1, 2)

        return fla
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def check_fused(h: int, d: int, t: int = 1000, b: int = 2) -> dict[str, float]:
    """Relative errors of the fused kernel vs the float64 reference, fresh inputs, NaN-poisoned memory."""
    from hedgehog.kernels import hedgehog_attention

    fmap = _hedgehog_map(h, d, "cuda")
    q, k, v = (
        torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
    )
    grad_out = torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16)
    poison = torch.full((2**29,), float("nan"), device="cuda")
    del poison
    params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
    out, _ = hedgehog_attention(q, k, v, *params)
    grads = torch.autograd.grad(out, (q, k, v, *params), grad_out)
    fm64 = HedgehogFeatureMap(h, d).to("cuda").double()
    fm64.load_state_dict(fmap.state_dict())
    refs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    fq, fk = fm64(refs[0], refs[1])
    ref = quadratic_linear_attention(fq, fk, refs[2], causal=True)
    ref_grads = torch.autograd.grad(ref, (*refs, *fm64.parameters()), grad_out.double())
    names = ("out", "dq", "dk", "dv", "dWq", "dbq", "dWk", "dbk")
    errors = {}
    for name, x, r in zip(names, (out, *grads), (ref, *ref_grads), strict=True):
        x = x.double()
        errors[name] = float("nan") if not torch.isfinite(x).all() else ((x - r).norm() / r.norm()).item()
    return errors


def run_sweep(device: str, shapes: dict, methods: tuple[str, ...]) -> Iterator[list[dict]]:
    """Time every method at every length of every shape; yields each length's rows as they are measured."""
    time_ms = _timer(device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    for shape, cfg in shapes.items():
        h, d = cfg["H"], cfg["D"]
        fmap = _hedgehog_map(h, d, device)
        for t in cfg["lengths"]:
            b = cfg["tokens"] // t
            q, k, v = (
                torch.randn(b, h, t, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3)
            )
            grad_out = torch.randn(b, h, t, d, device=device, dtype=dtype)
            rows = []
            for method in methods:
                row = {"shape": shape, "H": h, "D": d, "F": 2 * d, "T": t, "B": b, "method": method}
                forward = make_forward(method, q, k, v, fmap)
                if forward is None:
                    continue

                def step(forward=forward, grad_out=grad_out):
                    forward().backward(grad_out)

                try:
                    if device == "cuda":
                        torch.cuda.synchronize()
                        gc.collect()  # the last method's garbage, freed during this step, would lower its peak
                        torch.cuda.empty_cache()
                        base = torch.cuda.memory_allocated()
                        torch.cuda.reset_peak_memory_stats()
                        step()
                        torch.cuda.synchronize()
                        row["peak_extra_GB"] = (torch.cuda.max_memory_allocated() - base) / 1e9
                    grads = [q, k, v, *fmap.parameters()]
                    row["fwd_bwd_ms"] = time_ms(step, grads)
                    row["fwd_ms"] = time_ms(forward, grads)
                except torch.OutOfMemoryError:
                    row["error"] = "out of memory"
                for x in (q, k, v, *fmap.parameters()):
                    x.grad = None
                rows.append(row)
                print(_row_line(row), flush=True)
            del q, k, v, grad_out
            yield rows


def _row_line(row: dict) -> str:
    ms = f"{row['fwd_bwd_ms']:.3f} ms (fwd {row['fwd_ms']:.3f})" if "fwd_ms" in row else row.get("error", "")
    mem = f" peak {row['peak_extra_GB']:.2f} GB" if "peak_extra_GB" in row else ""
    return f"{row['shape']:7s} T={row['T']:>6d} B={row['B']:>4d} {row['method']:10s} {ms}{mem}"


def annotate(rows: list[dict], ceilings: dict[str, float] | None) -> None:
    """Add FLOP/s, effective GB/s and the fraction of the memory floor to each timed row."""
    for row in rows:
        if "fwd_bwd_ms" not in row:
            continue
        b, h, t, d, f = row["B"], row["H"], row["T"], row["D"], row["F"]
        seconds = row["fwd_bwd_ms"] / 1e3
        if row["method"] == "sdpa":
            flops = softmax_attention_flops(b, h, t, d)
        else:
            flops = linear_attention_flops(b, h, t, d, f)
        nbytes = attention_bytes(b, h, t, d)
        row["TFLOPs"] = flops / seconds / 1e12
        row["GBps"] = nbytes / seconds / 1e9
        if ceilings:
            floor_ms = 1e3 * max(
                nbytes / (ceilings["copy_GBps"] * 1e9), flops / (ceilings["bf16_matmul_TFLOPs"] * 1e12)
            )
            row["floor_ms"] = floor_ms
            row["memory_floor_ms"] = 1e3 * nbytes / (ceilings["copy_GBps"] * 1e9)
            row["fraction_of_memory_floor"] = row["memory_floor_ms"] / row["fwd_bwd_ms"]


# ---------------------------------------------------------------- whole model


GPT2_125M = {"n_layer": 12, "n_embd": 768, "n_head": 12}
GPT2_TINY = {"n_layer": 2, "n_embd": 64, "n_head": 4}  # CPU smoke run


def gpt2(attention: str, n_positions: int, device: str, size: dict) -> torch.nn.Module:
    """Hugging Face GPT2LMHeadModel (random init); ``hedgehog`` converts it with the project's one
    conversion, attention built as conf/attention/hedgehog.yaml builds it."""
    from functools import partial

    from transformers import GPT2Config, GPT2LMHeadModel

    from hedgehog.attention import LinearAttention
    from hedgehog.models.conversion import convert

    config = GPT2Config(n_positions=n_positions, **size)
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").to(device)
    if attention == "hedgehog":
        feature_map = partial(HedgehogFeatureMap, form="softmax", temperature=1.0)
        convert(model, partial(LinearAttention, feature_map=feature_map, chunk_size=CHUNK, check_finite=True))
    return model


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train_throughput(device: str, lengths: list[int], tokens: int, size: dict, steps: int) -> list[dict]:
    """Training tokens/s (bf16 autocast, fused AdamW on CUDA) of SDPA and Hedgehog GPT-2, same harness."""
    rows = []
    for attention in ("sdpa", "hedgehog"):
        for t in lengths:
            torch.manual_seed(0)
            model = gpt2(attention, max(lengths), device, size)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
            ids = torch.randint(0, model.config.vocab_size, (tokens // t, t), device=device)

            def step(model=model, optimizer=optimizer, ids=ids):
                with torch.autocast(device, dtype=torch.bfloat16):
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            for _ in range(2):
                step()
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            _sync(device)
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
            del model, optimizer, ids
    return rows


SDPA_DECODE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def start_decode(
    attention: str, context: int, batch: int, new_tokens: int, device: str, size: dict
) -> tuple[torch.nn.Module, object, torch.Tensor]:
    """The decode harness's GPT-2 (positions for ``new_tokens`` more) and its cache after a prefill of
    ``context`` random tokens, and the first greedy token. Call under no_grad, autocast and the SDPA
    backends the caller wants: SDPA models use transformers' key cache, Hedgehog ``LinearAttentionCache``.
    """
    from transformers import DynamicCache

    from hedgehog.models.conversion import LinearAttentionCache

    torch.manual_seed(0)
    model = gpt2(attention, context + new_tokens, device, size).eval()
    cache = LinearAttentionCache(model) if attention == "hedgehog" else DynamicCache(config=model.config)
    ids = torch.randint(0, model.config.vocab_size, (batch, context), device=device)
    return model, cache, next_token(model, cache, ids)


def next_token(model: torch.nn.Module, cache: object, ids: torch.Tensor) -> torch.Tensor:
    """One forward through the cache; the greedy next token (B, 1)."""
    # past_key_values: the keyword every transformers 5.x takes (later ones also say cache=)
    return model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)


@torch.no_grad()
def decode_throughput(device: str, context: int, batch: int, new_tokens: int, size: dict) -> list[dict]:
    """Greedy decoding through the Hugging Face forward loop after a prefill of ``context``.

    SDPA decodes with transformers' key cache, Hedgehog with the fixed-size ``LinearAttentionCache``.
    Each row reports ms per step, tokens/s, the bytes the cache holds after decoding (``cache_MB``)
    and, on CUDA, the peak memory allocated while decoding (``peak_GB``). SDPA runs without its
    cuDNN backend (``SDPA_DECODE_BACKENDS``): with a key length that grows every step it builds a
    cuDNN graph per call, 5.6 ms of host time per layer on the H200 (torch 2.11,
    experiments/efficiency/decode_profile_h200.log), which would make the softmax baseline 5x slow.
    """
    rows = []
    for attention in ("sdpa", "hedgehog"):
        warmup = 2  # the first steps compile kernels; not timed
        with torch.autocast(device, dtype=torch.bfloat16), sdpa_kernel(SDPA_DECODE_BACKENDS):
            model, cache, token = start_decode(attention, context, batch, warmup + new_tokens, device, size)
            for step in range(warmup + new_tokens):
                if step == warmup:
                    _sync(device)
                    if device == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    start = time.perf_counter()
                token = next_token(model, cache, token)
            _sync(device)
        step_ms = (time.perf_counter() - start) * 1e3 / new_tokens
        seen = cache.get_seq_length()
        if seen != context + warmup + new_tokens:
            raise RuntimeError(
                f"{attention}: the cache saw {seen} tokens, expected {context + warmup + new_tokens}; the "
                "model did not decode from it (check the cache keyword of this transformers version)"
            )
        held = [(layer.keys, layer.values, *(getattr(layer, "state", None) or ())) for layer in cache.layers]
        cache_bytes = sum(t.numel() * t.element_size() for h in held for t in h if torch.is_tensor(t))
        row = {
            "attention": attention,
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
            f"decode {attention:8s} context={context} batch={batch} {step_ms:8.1f} ms/step "
            f"{row['tokens_per_s']:8.0f} tokens/s cache {row['cache_MB']:.2f} MB{peak}",
            flush=True,
        )
        del model, cache
    return rows


def model_markdown(record: dict) -> str:
    lines = [
        f"# GPT-2 125M, SDPA vs Hedgehog (converted): {record['device']}",
        "",
        f"**{record['note']}**",
        "",
    ]
    if record.get("train"):
        lines += [
            "| training T | B | SDPA tokens/s | Hedgehog tokens/s | Hedgehog / SDPA |",
            "|---|---|---|---|---|",
        ]
    train = {(r["attention"], r["T"]): r for r in record.get("train", [])}
    for t in dict.fromkeys(r["T"] for r in record.get("train", [])):
        s, h = train[("sdpa", t)], train[("hedgehog", t)]
        lines.append(
            f"| {t:,} | {s['B']} | {s['tokens_per_s']:,.0f} | {h['tokens_per_s']:,.0f} | {h['tokens_per_s'] / s['tokens_per_s']:.2f}x |"
        )
    if record.get("decode"):
        lines += [
            "",
            "| decode context | batch | SDPA ms/step | Hedgehog ms/step | Hedgehog / SDPA tokens/s | Hedgehog cache MB | SDPA cache MB |",
            "|---|---|---|---|---|---|---|",
        ]
    dec = {(r["attention"], r["context"]): r for r in record.get("decode", [])}
    for context in dict.fromkeys(r["context"] for r in record.get("decode", [])):
        s, h = dec[("sdpa", context)], dec[("hedgehog", context)]
        lines.append(
            f"| {context:,} | {s['batch']} | {s['step_ms']:.1f} | {h['step_ms']:.1f} | "
            f"{h['tokens_per_s'] / s['tokens_per_s']:.2f}x | {h['cache_MB']:,.1f} | {s['cache_MB']:,.1f} |"
        )
    return "\n".join([*lines, ""])


def run_model(out_dir: Path, parts: tuple[str, ...] = ("train", "decode")) -> None:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if cuda:
        size, lengths, tokens, steps, contexts, batch, new = (
            GPT2_125M,
            [1024, 8192],
            65536,
            5,
            [1024, 32768],
            8,
            16,
        )
        record = {
            "device": torch.cuda.get_device_name(),
            "note": "GPT-2 125M, 65,536 tokens per training step",
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


# ---------------------------------------------------------------- outputs


def _cell(x: float | None, fmt: str = "{:.3f}") -> str:
    return "" if x is None or math.isnan(x) else fmt.format(x)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None else None


_RUN_NAMES = "ABCDEFGHIJ"


def markdown_table(record: dict) -> str:
    """The per-length table, regenerated from the JSON record."""
    lines = [
        f"# Attention efficiency: {record['device']}",
        "",
        f"Generated by `python -m hedgehog.bench` from `{record['stem']}.json`. Causal attention, "
        f"forward + backward, {record.get('dtype', 'bf16')}, fixed tokens per call (B = tokens / T); median ms "
        "(triton.testing.do_bench); peak = extra memory of one fwd+bwd.",
        "",
    ]
    if record.get("source"):
        lines += [f"Source: {record['source']}.", ""]
    runs = record.get("runs", [])
    if runs:
        lines += [
            "Merged from several runs on this device (column 'run': which run timed SDPA/fla/reference/fused):",
            "",
        ]
        for i, run in enumerate(runs):
            what = "; ".join(run[k] for k in ("source", "note") if run.get(k))
            soft = ", ".join(f"{k} {v}" for k, v in run.get("software", {}).items())
            checks = []
            if run.get("correctness"):
                worst = max(max(e.values()) for e in run["correctness"].values())
                checks.append(f"fused vs float64: worst relative error {worst:.1e}")
            if run.get("ceilings"):
                c = run["ceilings"]
                checks.append(f"copy {c['copy_GBps']:.0f} GB/s, matmul {c['bf16_matmul_TFLOPs']:.0f} TFLOP/s")
            said = f" [{'; '.join(checks)}]" if checks else ""
            lines.append(
                f"- run {_RUN_NAMES[i]}: {run.get('date', '')} ({soft}){said}{': ' + what if what else ''}"
            )
        lines.append("")
    if record.get("note"):
        lines += [f"**{record['note']}**", ""]
    if record.get("ceilings"):
        c = record["ceilings"]
        lines += [
            f"Measured ceilings: device copy {c['copy_GBps']:.0f} GB/s, bf16 matmul {c['bf16_matmul_TFLOPs']:.0f} TFLOP/s.",
            "",
        ]
    if record.get("correctness"):
        lines += [
            "Fused kernel vs float64 reference before timing (max relative error over outputs and all gradients):",
            "",
        ]
        for shape, errs in record["correctness"].items():
            worst = max(errs.values())
            lines.append(
                f"- {shape}: {worst:.2e} (" + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) + ")"
            )
        lines.append("")
    by = {(r["shape"], r["T"], r["method"]): r for r in record["rows"]}
    for shape in dict.fromkeys(r["shape"] for r in record["rows"]):
        rows = [r for r in record["rows"] if r["shape"] == shape]
        r0 = rows[0]
        lines += [
            f"## {shape}: H={r0['H']}, D={r0['D']}, F={r0['F']}, {r0['B'] * r0['T']:,} tokens per call",
            "",
            "| T | SDPA ms | fla ms | reference ms | fused ms | SDPA / fused | fla / fused "
            "| fused fwd ms | SDPA fwd ms | fused peak GB | SDPA peak GB | fused TFLOP/s | fused GB/s "
            "| fused / memory floor |" + (" run |" if runs else ""),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if runs else ""),
        ]
        for t in dict.fromkeys(r["T"] for r in rows):
            cells = {m: by.get((shape, t, m), {}) for m in METHODS}
            ms = {m: c.get("fwd_bwd_ms") for m, c in cells.items()}
            fused, sdpa = cells["fused"], cells["sdpa"]
            lines.append(
                f"| {t:,} | {_cell(ms['sdpa'])} | {_cell(ms['fla'])} | {_cell(ms['reference'])} | "
                f"{_cell(ms['fused'])} | {_cell(_ratio(ms['sdpa'], ms['fused']), '{:.2f}x')} | "
                f"{_cell(_ratio(ms['fla'], ms['fused']), '{:.2f}x')} | {_cell(fused.get('fwd_ms'))} | "
                f"{_cell(sdpa.get('fwd_ms'))} | {_cell(fused.get('peak_extra_GB'), '{:.2f}')} | "
                f"{_cell(sdpa.get('peak_extra_GB'), '{:.2f}')} | {_cell(fused.get('TFLOPs'), '{:.0f}')} | "
                f"{_cell(fused.get('GBps'), '{:.0f}')} | {_cell(fused.get('fraction_of_memory_floor'), '{:.2f}')} |"
                + (
                    " " + "/".join(_RUN_NAMES[c["run"]] if "run" in c else "-" for c in cells.values()) + " |"
                    if runs
                    else ""
                )
            )
        lines.append("")
    lines += [
        "FLOPs of linear attention are the useful work of the chunked form (chunk 64), without the",
        "recomputation the kernels do; bytes are the fewest fwd+bwd must move (q, k, v, o, do, dq, dk, dv",
        "once each). 'fused / memory floor' = (those bytes at the measured copy bandwidth) / measured time.",
        "",
    ]
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    """Log-log time and peak memory against length, one column per shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r["shape"] for r in record["rows"]))
    fig, axes = plt.subplots(2, len(shapes), figsize=(6 * len(shapes), 8), squeeze=False)
    for j, shape in enumerate(shapes):
        for method in METHODS:
            rows = [
                r
                for r in record["rows"]
                if r["shape"] == shape and r["method"] == method and "fwd_bwd_ms" in r
            ]
            if not rows:
                continue
            ts = [r["T"] for r in rows]
            axes[0][j].plot(ts, [r["fwd_bwd_ms"] for r in rows], marker="o", label=method)
            if all("peak_extra_GB" in r for r in rows):
                axes[1][j].plot(ts, [r["peak_extra_GB"] for r in rows], marker="o", label=method)
        axes[0][j].set_title(f"{shape}: fwd+bwd time (fixed tokens per call)")
        axes[0][j].set_ylabel("ms")
        axes[1][j].set_title(f"{shape}: peak extra memory")
        axes[1][j].set_ylabel("GB")
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T")
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_lines():
                ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge_records(records: list[dict]) -> dict:
    """One record from several runs: a later run's row replaces an earlier one of the same shape, T, method.

    ``runs`` keeps every run's date, software, ceilings, correctness check, source and the rows it
    supplied, so each cell's run is known; the first record gives device, stem and dtype.
    """
    if len(records) == 1:
        return records[0]
    if len(records) > len(_RUN_NAMES):
        raise ValueError(f"at most {len(_RUN_NAMES)} records can be merged, got {len(records)}")
    devices = {r["device"] for r in records}
    if len(devices) > 1:
        raise ValueError(f"records from different devices cannot be merged into one table: {sorted(devices)}")
    per_run = ("date", "software", "ceilings", "correctness", "source", "note")
    merged = {k: v for k, v in records[0].items() if k not in (*per_run, "rows", "runs")}
    rows: dict[tuple, dict] = {}
    runs = []
    for i, rec in enumerate(records):
        for row in rec["rows"]:
            rows[(row["shape"], row["T"], row["method"])] = {**row, "run": i}
        runs.append({k: rec[k] for k in per_run if k in rec})
    for i, run in enumerate(runs):
        run["rows"] = sorted(f"{s} {t} {m}" for (s, t, m), row in rows.items() if row["run"] == i)
    order = {s: n for n, s in enumerate(SHAPES)}
    merged["rows"] = sorted(
        rows.values(), key=lambda r: (order.get(r["shape"], 99), r["T"], METHODS.index(r["method"]))
    )
    merged["runs"] = runs
    return merged


def write_outputs(record: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{record['stem']}.json").write_text(json.dumps(record, indent=1))
    (out_dir / f"{record['stem']}.md").write_text(markdown_table(record))
    plot(record, out_dir / f"{record['stem']}.png")


def _select(table: dict, wanted: list[str], lengths: str) -> dict:
    """The wanted shapes of ``table``, each with only the ``lengths`` asked for (all when empty)."""
    unknown = [s for s in wanted if s not in table]
    if unknown:
        raise SystemExit(f"--shapes: unknown {unknown}; choose from {list(table)}")
    keep = {int(x) for x in lengths.split(",") if x} if lengths else None
    shapes = {
        s: {**table[s], "lengths": [t for t in table[s]["lengths"] if keep is None or t in keep]}
        for s in wanted
    }
    shapes = {s: cfg for s, cfg in shapes.items() if cfg["lengths"]}
    if not shapes:
        raise SystemExit(
            f"--lengths {lengths}: the shapes' lengths are {[table[s]['lengths'] for s in wanted]}"
        )
    return shapes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset of gpt2,llama2")
    parser.add_argument(
        "--lengths", default="", help="comma-separated subset of each shape's lengths (default: all)"
    )
    parser.add_argument(
        "--table-only",
        type=Path,
        nargs="+",
        help="regenerate table and plot from JSON records; with several, later rows replace earlier ones",
    )
    parser.add_argument(
        "--model", action="store_true", help="whole-model GPT-2 training and decoding instead"
    )
    parser.add_argument("--model-parts", default="train,decode", help="with --model: train, decode or both")
    args = parser.parse_args(argv)
    if args.model:
        run_model(args.out, tuple(p for p in ("train", "decode") if p in args.model_parts.split(",")))
        return
    if args.table_only:
        write_outputs(merge_records([json.loads(p.read_text()) for p in args.table_only]), args.out)
        return
    methods = tuple(m for m in args.methods.split(",") if m)
    cuda = torch.cuda.is_available()
    wanted = [s for s in args.shapes.split(",") if s]
    record: dict = {
        "software": {
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if cuda:
        import triton

        name = torch.cuda.get_device_name()
        record.update(device=name, stem="results_" + name.split()[-1].lower())
        record["software"]["triton"] = triton.__version__
        try:
            import fla

            record["software"]["fla"] = fla.__version__
        except ImportError:
            record["software"]["fla"] = None
        record["ceilings"] = measure_ceilings()
        print("ceilings", record["ceilings"], flush=True)
        shapes = _select(SHAPES, wanted, args.lengths)
        if "fused" in methods:
            record["correctness"] = {s: check_fused(shapes[s]["H"], shapes[s]["D"]) for s in shapes}
            print("correctness", record["correctness"], flush=True)
            worst = max(max(e.values()) for e in record["correctness"].values())
            if not worst <= 1e-2:
                methods = tuple(m for m in methods if m != "fused")
                record["note"] = f"fused kernel failed the float64 check (worst {worst:.2e}); not timed"
    else:
        record.update(device=f"CPU ({platform.processor() or platform.machine()})", stem="results_cpu")
        record["note"] = (
            "No GPU: only the PyTorch reference, at small sizes; the kernels and SDPA's "
            "FlashAttention need a CUDA GPU (run `make bench` there)."
        )
        print(record["note"], flush=True)
        shapes = _select(CPU_SHAPES, wanted, args.lengths)
        methods = ("reference",)
    record["dtype"] = "bf16" if cuda else "fp32"
    record["rows"] = []
    for rows in run_sweep("cuda" if cuda else "cpu", shapes, methods):
        record["rows"] += rows  # outputs rewritten after each length: a cut run keeps what it measured
        annotate(record["rows"], record.get("ceilings"))
        write_outputs(record, args.out)
    print(markdown_table(record))


if __name__ == "__main__":
    main()
