"""Where one GPT-2 125M training step goes, SDPA vs Hedgehog (GPU): the whole-model harness's model
(`model_bench.gpt2`), 65,536 tokens at one length, two warm-up steps, then torch.profiler over one
step: device kernels grouped by name, their summed device time, and the step's wall time. Explains the
1k row of `tables/h200/model_h200*_train.md`, the length where the kernel issue wants >= 1.0x SDPA.

    python -m experiments.efficiency.lab.train_profile [--length 1024] [--top 15]
"""

from __future__ import annotations

import argparse
import time

import torch

from experiments.efficiency.model_bench import GPT2_125M, GPT2_TINY, training_step
from experiments.efficiency.timing import print_kernels, profile_kernels, sync


def profile(attention: str, length: int, tokens: int, top: int, device: str, size: dict) -> float:
    """Print the step's wall time and its ``top`` device kernels; returns the summed device time (ms)."""
    step = training_step(attention, length, tokens, device, size, length)
    for _ in range(2):
        step()
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    wall_ms = (time.perf_counter() - start) * 1e3
    total_ms, rows = profile_kernels(step, device)
    print(
        f"\n{attention}: T={length} B={tokens // length}, step {wall_ms:.1f} ms wall, {total_ms:.1f} ms "
        f"{'of device kernels' if device == 'cuda' else 'of CPU operators (self)'}"
    )
    print_kernels(rows, top)
    return total_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device, size = ("cuda", GPT2_125M) if cuda else ("cpu", GPT2_TINY)
    tokens = args.tokens if cuda else 4 * min(args.length, 128)
    length = args.length if cuda else min(args.length, 128)
    totals = {a: profile(a, length, tokens, args.top, device, size) for a in ("sdpa", "hedgehog")}
    print(f"\ndevice time Hedgehog - SDPA: {totals['hedgehog'] - totals['sdpa']:+.1f} ms per step")


if __name__ == "__main__":
    main()
