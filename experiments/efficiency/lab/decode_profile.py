"""Where one decode step of GPT-2 125M goes, SDPA with transformers' key cache vs Hedgehog with
its state cache (GPU): the whole-model decode harness's model and caches (`model_bench.start_decode`),
a prefill, warm-up steps (SDPA with the harness's backends; --cudnn adds cuDNN's), then
torch.profiler over timed steps (host ops by self CPU time, device kernels by device time).
Explains the decode rows of `tables/h200/model_h200.md`.

    python -m experiments.efficiency.lab.decode_profile [--context 1024] [--batch 8] [--steps 8]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from experiments.efficiency.model_bench import GPT2_125M, SDPA_DECODE_BACKENDS, next_token, start_decode
from experiments.efficiency.timing import sync


@torch.no_grad()
def profile(
    attention: str, context: int, batch: int, steps: int, device: str = "cuda", cudnn: bool = False
) -> None:
    backends = [*SDPA_DECODE_BACKENDS, SDPBackend.CUDNN_ATTENTION] if cudnn else SDPA_DECODE_BACKENDS
    with torch.autocast(device, dtype=torch.bfloat16), sdpa_kernel(backends):
        model, cache, token = start_decode(attention, context, batch, 4 + 2 * steps, device, GPT2_125M)
        for _ in range(4):
            token = next_token(model, cache, token)
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            token = next_token(model, cache, token)
        sync(device)
        plain_ms = (time.perf_counter() - start) * 1e3 / steps
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(steps):
                token = next_token(model, cache, token)
            sync(device)
    events = prof.key_averages()
    device_ms = sum(e.self_device_time_total for e in events) / 1e3 / steps
    print(
        f"\n== {attention}{' (cuDNN allowed)' if cudnn and attention == 'sdpa' else ''}: context {context}, batch {batch}: {plain_ms:.2f} ms/step unprofiled; "
        f"kernels {device_ms:.2f} ms/step",
        flush=True,
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
    print(events.table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=60), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of the script itself")
    parser.add_argument(
        "--cudnn", action="store_true", help="let SDPA pick its cuDNN backend too (the harness does not)"
    )
    args = parser.parse_args()
    for attention in ("sdpa", "hedgehog"):
        profile(attention, args.context, args.batch, args.steps, args.device, args.cudnn)


if __name__ == "__main__":
    main()
