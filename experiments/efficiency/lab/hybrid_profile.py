"""Where the sliding-window hybrid's fwd+bwd goes (GPU): torch.profiler over one call of
`hedgehog.kernels.window_attention` on features written by the map kernels, device kernels grouped by
name with their summed time, at GPT-2's shape (1k) and Llama-2's (2k), 131,072 / 65,536 tokens; then the
call's time under each launch option of the window kernels (`launch_overrides` window_fwd / window_dq / window_dkv).
Explains `hybrid_bench`'s hybrid / fused ratio (the issue's target: <= 1.3x).

    python -m experiments.efficiency.lab.hybrid_profile [--top 15]
"""

from __future__ import annotations

import argparse

import torch

from experiments.efficiency.attention_bench import SHAPES, hedgehog_map
from experiments.efficiency.lab.hybrid_bench import hybrid_inputs
from experiments.efficiency.timing import print_kernels, profile_kernels, timer


def inputs(shape: str, t: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The hybrid's inputs at a shape and length (`hybrid_bench.hybrid_inputs`) and an upstream grad."""
    cfg = SHAPES[shape]
    b, h, d = cfg["tokens"] // t, cfg["H"], cfg["D"]
    xs = hybrid_inputs(b, h, t, d, hedgehog_map(h, d, "cuda"))
    return xs, torch.randn_like(xs[2])


def main(argv: list[str] | None = None) -> None:
    from hedgehog.kernels import launch_overrides, window_attention

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    time_ms = timer("cuda")
    for shape, t in (("gpt2", 1024), ("llama2", 2048)):
        xs, grad = inputs(shape, t)

        def step(xs=xs, grad=grad):
            for x in xs:  # no gradient accumulation in the profile (the timer resets them the same way)
                x.grad = None
            window_attention(*xs)[0].backward(grad)

        for _ in range(2):
            step()
        torch.cuda.synchronize()
        total, rows = profile_kernels(step, "cuda")
        print(f"{shape} T={t}: hybrid fwd+bwd, device kernels {total:.3f} ms in all", flush=True)
        print_kernels(rows, args.top)
        for kind in ("window_fwd", "window_dq", "window_dkv"):
            for warps in (4, 8):
                for stages in (1,):
                    try:
                        with launch_overrides(**{kind: {"num_warps": warps, "num_stages": stages}}):
                            ms = time_ms(step, xs)
                    except Exception as err:  # a launch option that does not compile (out of resources)
                        print(f"  {kind} warps {warps} stages {stages}: {type(err).__name__}", flush=True)
                        continue
                    print(f"  {kind} warps {warps} stages {stages}: fwd+bwd {ms:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
