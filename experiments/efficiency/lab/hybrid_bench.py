"""The sliding-window hybrid's kernels against the pure Hedgehog kernels (GPU): `hedgehog.kernels.
window_attention` (softmax over the last 64 keys + Hedgehog outside, on features written by the map kernels)
beside the fused Hedgehog kernels and the generic ones on the same features, forward and forward + backward,
and the peak memory of one forward + backward, at each shape's lengths. The kernel issue's target for the
hybrid: <= 1.3x the pure Hedgehog kernel. The output and every gradient are first checked against the
float64 quadratic form (T = 1,000); nothing is timed if that fails.

    python -m experiments.efficiency.lab.hybrid_bench [--shapes gpt2,llama2] [--lengths 1024,2048]
"""

from __future__ import annotations

import argparse

import torch

from experiments.efficiency.attention_bench import SHAPES, hedgehog_map
from experiments.efficiency.timing import peak_extra_memory_gb, timer


def check(h: int, d: int, t: int = 1000, b: int = 2) -> float:
    """The worst relative error of the hybrid's output and gradients (bf16) against float64."""
    from hedgehog.attention.window import quadratic_window_attention
    from hedgehog.kernels import window_attention

    fmap = hedgehog_map(h, d, "cuda")
    q, k, v = (torch.randn(b, h, t, d, device="cuda") for _ in range(3))
    gamma = torch.rand(h, device="cuda") * 0.9 + 0.05
    with torch.no_grad():
        fq, fk = fmap(q, k)
    # the reference sees the bf16-rounded inputs: the window's max is part of the function and its gradient
    # goes to the argmax key, which rounding alone moves at near-ties (tests/test_kernels.py, window check)
    q, k, v, fq, fk = (x.bfloat16() for x in (q, k, v, fq, fk))
    refs = [x.double().requires_grad_() for x in (q, k, v, fq, fk, gamma)]
    ref = quadratic_window_attention(*refs[:5], 64, refs[5])
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, refs, grad)
    inputs = [x.detach().requires_grad_() for x in (q, k, v, fq, fk)] + [gamma.requires_grad_()]
    out = window_attention(*inputs)[0]
    grads = torch.autograd.grad(out, inputs, grad.bfloat16())
    pairs = zip((out, *grads), (ref, *ref_grads), strict=True)
    return max(((x.double() - r).norm() / r.norm()).item() for x, r in pairs)


def hybrid_inputs(b: int, h: int, t: int, d: int, fmap) -> list[torch.Tensor]:
    """q, k, v (bf16), their features fq, fk written by the map kernels, and gamma = 0.5 per head, all
    requiring grad: the hybrid's inputs for the timings here and in hybrid_profile."""
    from hedgehog.kernels import hedgehog_features

    q, k, v = (torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with torch.no_grad():
        fq = hedgehog_features(q, fmap.weight_q, fmap.bias_q)
        fk = hedgehog_features(k, fmap.weight_k, fmap.bias_k)
    gamma = torch.full((h,), 0.5, device="cuda")
    return [x.requires_grad_() for x in (q, k, v, fq, fk, gamma)]


def times(b, h, t, d, fmap, time_ms) -> dict[str, float]:
    """Forward and fwd+bwd ms of the fused Hedgehog kernels, the generic ones and the hybrid, same inputs."""
    from hedgehog.kernels import hedgehog_attention, linear_attention, window_attention

    params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
    q, k, v, fq, fk, gamma = hybrid_inputs(b, h, t, d, fmap)
    grad = torch.randn_like(v)
    forwards = {
        "fused": lambda: hedgehog_attention(q, k, v, *params)[0],
        "generic": lambda: linear_attention(fq, fk, v)[0],
        "hybrid": lambda: window_attention(q, k, v, fq, fk, gamma)[0],
    }
    grads = [q, k, v, fq, fk, gamma, *params]
    out = {}
    for name, forward in forwards.items():
        out[f"{name} fwd"] = time_ms(forward, grads)
        out[f"{name} fwd+bwd"] = time_ms(lambda forward=forward: forward().backward(grad), grads)
    for name, forward in forwards.items():  # peak GB of one fwd+bwd above the inputs (as the sweep's)
        for x in grads:
            x.grad = None
        out[f"{name} peak GB"] = peak_extra_memory_gb(lambda forward=forward: forward().backward(grad))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--lengths", default=None, help="comma list; default: each shape's lengths")
    args = parser.parse_args(argv)
    wanted = None if args.lengths is None else {int(x) for x in args.lengths.split(",")}
    time_ms = timer("cuda")
    for shape in args.shapes.split(","):
        cfg = SHAPES[shape]
        h, d = cfg["H"], cfg["D"]
        error = check(h, d)
        print(
            f"{shape}: hybrid vs float64 (T = 1,000, output and 6 gradients): worst relative error {error:.2e}"
        )
        if not error <= 1e-2:
            print(f"{shape}: not timed (error above 1e-2)", flush=True)
            continue
        fmap = hedgehog_map(h, d, "cuda")
        for t in (t for t in cfg["lengths"] if wanted is None or t in wanted):
            b = cfg["tokens"] // t
            ms = times(b, h, t, d, fmap, time_ms)
            cells = ", ".join(f"{name} {x:.3f}" for name, x in ms.items())
            ratio = ms["hybrid fwd+bwd"] / ms["fused fwd+bwd"]
            print(
                f"{shape:7s} T={t:>6d} B={b:>4d} ms: {cells}; hybrid / fused fwd+bwd {ratio:.2f}x", flush=True
            )


if __name__ == "__main__":
    main()
