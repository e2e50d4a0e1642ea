"""The attention sweep: SDPA softmax, fla, the PyTorch reference, the fused kernels and the generic
kernels on features written once (by the PyTorch map or by the map kernel), fwd+bwd per length.

Causal attention at a fixed number of tokens per call (B = tokens / T) at each length T, for two
shapes: GPT-2 (H=12, D=64, F=128, 131,072 tokens) and Llama-2 (H=32, D=128, F=256, 65,536 tokens).
``fused`` computes Hedgehog's features inside the kernels (recomputed by each of the four); ``generic``
writes them once in bf16 with the PyTorch map and runs the project's generic chunked kernels on them
(the other design the kernel issue asks to weigh); ``mapped`` writes them with the map kernels
(``hedgehog.kernels.hedgehog_features``) instead. ``check_kernel`` compares each of the three with the
float64 reference (outputs and every gradient) before any of its timings count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from experiments.efficiency.flops import CHUNK
from experiments.efficiency.timing import peak_extra_memory_gb, timer
from hedgehog.attention import HedgehogFeatureMap, chunked_linear_attention, quadratic_linear_attention

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
METHODS = ("sdpa", "fla", "reference", "fused", "generic", "mapped")
# the project's kernels, each checked against float64 before timing, and where a run record keeps that check
# (per shape: relative error per tensor)
CORRECTNESS_KEYS = {"fused": "correctness", "generic": "correctness_generic", "mapped": "correctness_mapped"}
KERNEL_METHODS = tuple(CORRECTNESS_KEYS)


def hedgehog_map(h: int, d: int, device: str) -> HedgehogFeatureMap:
    """A Hedgehog feature map with its projections moved off their initialisation by N(0, 0.1^2) noise,
    so the kernels' projection and its gradients are exercised with general weights."""
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
            fq, fk = fmap.pytorch_features(q, k)
            return chunked_linear_attention(fq, fk, v, chunk_size=CHUNK)[0]

        return reference
    if method == "fused":
        from hedgehog.kernels import hedgehog_attention

        return lambda: hedgehog_attention(q, k, v, *params)[0]
    if method == "generic":
        from hedgehog.kernels import linear_attention

        def generic():
            fq, fk = fmap.pytorch_features(
                q, k
            )  # float32 from the map; written once in the inputs' precision
            return linear_attention(fq.to(q.dtype), fk.to(q.dtype), v, causal=True)[0]

        return generic
    if method == "mapped":
        from hedgehog.kernels import hedgehog_features, linear_attention

        def mapped():
            fq = hedgehog_features(q, fmap.weight_q, fmap.bias_q)  # bf16, written once by the map kernel
            fk = hedgehog_features(k, fmap.weight_k, fmap.bias_k)
            return linear_attention(fq, fk, v, causal=True)[0]

        return mapped
    if method == "fla":
        try:
            from fla.ops.linear_attn import chunk_linear_attn
        except ImportError:
            return None

        def fla():
            # fla's layout is (B, T, H, F); the feature map runs in PyTorch, fla normalises
            fq, fk = fmap.pytorch_features(q, k)
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


def check_kernel(method: str, h: int, d: int, t: int = 1000, b: int = 2) -> dict[str, float]:
    """Relative errors of a kernel method (``KERNEL_METHODS``) vs the float64 reference: output and the
    gradients of q, k, v and the map's parameters, fresh inputs, NaN-poisoned memory."""
    if method not in KERNEL_METHODS:
        raise ValueError(f"check_kernel checks one of {KERNEL_METHODS}, got {method!r}")
    fmap = hedgehog_map(h, d, "cuda")
    q, k, v = (
        torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
    )
    grad_out = torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16)
    poison = torch.full((2**29,), float("nan"), device="cuda")
    del poison
    params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
    out = make_forward(method, q, k, v, fmap)()
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
    time_ms = timer(device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    for shape, cfg in shapes.items():
        h, d = cfg["H"], cfg["D"]
        fmap = hedgehog_map(h, d, device)
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
                        row["peak_extra_GB"] = peak_extra_memory_gb(step)
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
