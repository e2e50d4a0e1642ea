"""Launch-option sweep and per-kernel time breakdown of a kernel method (GPU only): the fused Hedgehog
kernels (default) or `mapped` (the map kernels writing features once, then the generic chunked kernels).

For each launch configuration: the float64 check of the benchmark (outputs and all gradients,
NaN-poisoned memory; configurations that fail are not timed), then forward and forward+backward
times (triton.testing.do_bench, median) at the given lengths of both shapes, and the time of each
kernel in one forward+backward (torch.profiler). One process, one GPU, side by side.

    python -m experiments.efficiency.lab.tune [--method mapped] [--lengths 1024,8192] [--configs "8;4"]
A config is "W[:S]" (num_warps W, num_stages S for every kernel) or comma-separated parts
"state=W[:S],fwd=..,dq=..,dkv=..", "chunk=BT", "bv=BV" (value columns per program), "walk=N",
"group=N" (walk programs resident per SM, programs per SM of dq and dk/dv), "carry=P" (the carry
kernel's cost in percent of a walk, for the segment count); configs are separated by ";". Each runs
under `hedgehog.kernels.launch_overrides`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch
import triton

from experiments.efficiency.attention_bench import (
    KERNEL_METHODS,
    SHAPES,
    check_kernel,
    hedgehog_map,
    make_forward,
)
from hedgehog.kernels import launch_overrides

KINDS = ("state", "fwd", "dq", "dkv")


def _options(spec: str) -> dict[str, int]:
    """ "W" or "W:S": num_warps W and num_stages S."""
    warps, _, stages = spec.partition(":")
    return {"num_warps": int(warps), **({"num_stages": int(stages)} if stages else {})}


BLOCKS = {"chunk": "BT", "bv": "BV"}  # -> launch_overrides(chunk=...)
SPLITS = ("walk", "group", "carry")  # -> launch_overrides(split=...)


def parse(config: str) -> dict[str, dict[str, int]]:
    """A config string -> the keyword arguments of ``launch_overrides`` ("default": none)."""
    if config == "default":
        return {}
    if "=" not in config:
        return {kind: _options(config) for kind in KINDS}
    out: dict[str, dict[str, int]] = {}
    for part in config.split(","):
        kind, spec = part.split("=")
        if kind in BLOCKS:
            out.setdefault("chunk", {})[BLOCKS[kind]] = int(spec)
        elif kind in SPLITS:
            out.setdefault("split", {})[kind] = int(spec)
        elif kind in KINDS:
            out[kind] = _options(spec)
        else:
            raise ValueError(f"unknown part {kind!r} in {config!r}: use {KINDS + tuple(BLOCKS) + SPLITS}")
    return out


def breakdown(step) -> dict[str, float]:
    """Milliseconds per kernel name (summed over launches) in one call of step."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    times = defaultdict(float)
    for e in prof.key_averages():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            times[e.key[:40]] += e.device_time_total / 1e3
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def measure(config: str, shapes: list[str], lengths: list[int], method: str = "fused") -> list[dict]:
    """The float64 check, then fwd and fwd+bwd ms and the per-kernel breakdown at each length, under
    the launch options in force (a shape whose check fails is not timed)."""
    rows = []
    for shape in shapes:
        cfg = SHAPES[shape]
        h, d = cfg["H"], cfg["D"]
        start = time.perf_counter()
        errors = check_kernel(method, h, d)
        worst = max(errors.values())
        line = {
            "method": method,
            "config": config,
            "shape": shape,
            "worst_rel_err": worst,
            "compile_check_s": time.perf_counter() - start,
        }
        print(json.dumps(line), flush=True)
        if not worst <= 1e-2:
            print("  FAILED", errors, flush=True)
            continue
        fmap = hedgehog_map(h, d, "cuda")
        params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
        for t in lengths:
            b = max(1, cfg["tokens"] // t)
            q, k, v = (
                torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                for _ in range(3)
            )
            g = torch.randn_like(q)

            fwd = make_forward(method, q, k, v, fmap)

            def step(fwd=fwd, g=g):
                fwd().backward(g)

            fwd_ms = triton.testing.do_bench(fwd, grad_to_none=[q, k, v, *params])
            step_ms = triton.testing.do_bench(step, grad_to_none=[q, k, v, *params])
            for x in (q, k, v, *params):  # else the profile times autograd adding into the old grads
                x.grad = None
            parts = breakdown(step)
            row = {
                "method": method,
                "config": config,
                "shape": shape,
                "T": t,
                "B": b,
                "fwd_ms": round(fwd_ms, 3),
                "fwd_bwd_ms": round(step_ms, 3),
                "kernels_ms": {k_: round(v_, 3) for k_, v_ in parts.items()},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            del q, k, v, g
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", default="fused", choices=KERNEL_METHODS)
    parser.add_argument("--lengths", default="1024,8192")
    parser.add_argument("--shapes", default="gpt2,llama2")
    parser.add_argument("--configs", default="default")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    results = []
    for config in args.configs.split(";"):
        with launch_overrides(**parse(config)):
            results += measure(config, args.shapes.split(","), lengths, args.method)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
