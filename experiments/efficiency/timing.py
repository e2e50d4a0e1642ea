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


def profile_kernels(step: Callable[[], object], device: str) -> tuple[float, list[tuple[float, int, str]]]:
    """One profiled call of ``step``: the summed time (ms) and (ms, calls, name) per kernel, largest first;
    device kernels on CUDA, CPU operators by self time elsewhere."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step()
        sync(device)
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    attr = "self_device_time_total"
    if not events:  # CPU: operators by self time instead
        events, attr = list(prof.key_averages()), "self_cpu_time_total"
    rows = sorted(((getattr(e, attr) / 1e3, e.count, e.key) for e in events), reverse=True)
    return sum(r[0] for r in rows), rows


def print_kernels(rows: list[tuple[float, int, str]], top: int) -> None:
    for ms, count, name in rows[:top]:
        print(f"  {ms:8.3f} ms  {count:4d} x  {name[:100]}", flush=True)
