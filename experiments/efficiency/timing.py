"""Timers, device synchronisation and peak memory for the benchmark (CUDA, with a CPU fallback)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on the CPU."""
    if device == "cuda":
        torch.cuda.synchronize()


def timer(device: str) -> Callable[[Callable[[], object], list[torch.Tensor]], float]:
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


def peak_extra_memory_gb(step: Callable[[], object]) -> float:
    """GB of CUDA memory one call of ``step`` allocates above what is allocated before it (peak)."""
    torch.cuda.synchronize()
    gc.collect()  # the last method's garbage, freed during this step, would lower its peak
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 1e9
