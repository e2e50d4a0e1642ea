"""The sliding-window hybrid's forward kernel against the pure Hedgehog kernels (GPU), forward only:
`hedgehog.kernels.window_attention` (softmax over the last 64 keys + Hedgehog outside, features written
by the map kernels) beside the fused Hedgehog forward and the generic forward on the same features, at
each shape's lengths. The kernel issue's target for the hybrid: <= 1.3x the pure Hedgehog kernel.
The output is first checked against the float64 quadratic form (T = 1,000); nothing is timed if it fails.

    python -m experiments.efficiency.lab.hybrid_forward [--shapes gpt2,llama2]
"""

from __future__ import annotations

import argparse

import torch

from experiments.efficiency.attention_bench import SHAPES, hedgehog_map
from experiments.efficiency.timing import timer


def check(h: int, d: int, t: int = 1000, b: int = 2) -> float:
    from hedgehog.attention.window import quadratic_window_attention
    from hedgehog.kernels import window_attention

    fmap = hedgehog_map(h, d, "cuda")
    q, k, v = (torch.randn(b, h, t, d, device="cuda") for _ in range(3))
    gamma = torch.rand(h, device="cuda") * 0.9 + 0.05
    with torch.no_grad():
        fq, fk = fmap(q, k)
        ref = quadratic_window_attention(*(x.double() for x in (q, k, v, fq, fk)), 64, gamma.double())
        out = window_attention(*(x.bfloat16() for x in (q, k, v, fq, fk)), gamma)
    return ((out.double() - ref).norm() / ref.norm()).item()


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args(argv)
    time_ms = timer("cuda")
    for shape in args.shapes.split(","):
        cfg = SHAPES[shape]
        h, d = cfg["H"], cfg["D"]
        error = check(h, d)
        print(f"{shape}: hybrid forward vs float64 (T = 1,000): relative error {error:.2e}", flush=True)
        if not error <= 1e-2:
            print(f"{shape}: not timed (error above 1e-2)")
            continue
        fmap = hedgehog_map(h, d, "cuda")
        gamma = torch.full((h,), 0.5, device="cuda")
        for t in cfg["lengths"]:
            b = cfg["tokens"] // t
            fused, generic, hybrid = forwards(b, h, t, d, fmap, gamma, time_ms)
            print(
                f"{shape:7s} T={t:>6d} B={b:>4d} forward ms: fused {fused:.3f}, generic on features {generic:.3f}, "
                f"hybrid on features {hybrid:.3f}; hybrid / fused {hybrid / fused:.2f}x, hybrid / generic "
                f"{hybrid / generic:.2f}x",
                flush=True,
            )


def forwards(b, h, t, d, fmap, gamma, time_ms) -> tuple[float, float, float]:
    """Forward ms of the fused Hedgehog kernel, the generic one and the hybrid on the same inputs."""
    from hedgehog.kernels import hedgehog_attention, hedgehog_features, linear_attention, window_attention

    params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
    q, k, v = (torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    fq = hedgehog_features(q, fmap.weight_q, fmap.bias_q)
    fk = hedgehog_features(k, fmap.weight_k, fmap.bias_k)
    return (
        time_ms(lambda: hedgehog_attention(q, k, v, *params), []),
        time_ms(lambda: linear_attention(fq, fk, v), []),
        time_ms(lambda: window_attention(q, k, v, fq, fk, gamma), []),
    )


if __name__ == "__main__":
    main()
