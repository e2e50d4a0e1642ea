"""What the benchmark counts: FLOPs and bytes of causal attention fwd+bwd, and the device's ceilings.

A softmax MFU formula is wrong for linear attention, so its useful work is counted here from the
chunked form (chunk ``CHUNK``); the bytes are the fewest a fwd+bwd must move. The ceilings (copy
bandwidth, bf16 matmul rate) are measured on the device, and ``annotate`` turns a timed row into
FLOP/s, GB/s and its fraction of the memory floor.
"""

from __future__ import annotations

import torch

CHUNK = 64  # tokens per chunk of the chunked form: the FLOP count's C and the PyTorch reference's chunk


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
