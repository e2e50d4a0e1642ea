"""Compile the fused kernels, the feature-map kernels and the hybrid's forward for sm_90 (Hopper) without a GPU and report their resources.

Costs no device time: Triton compiles for a named target, and the cuobjdump bundled with
Triton reads registers, stack (spills) and shared memory off the cubin, and counts the SASS
instructions that matter here (HGMMA = wgmma, STL/LDL = spills, BAR.SYNC = layout changes
through shared memory). The installed Triton may differ from the GPU machine's (3.6 there).

    python -m experiments.efficiency.lab.compile_report [--warps 8] [--stages 1] [--head-dim 64]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from hedgehog.kernels import KERNELS
from hedgehog.kernels import chunked as K

CUOBJDUMP = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
HALF_INPUTS = (
    "q_ptr",
    "k_ptr",
    "v_ptr",
    "o_ptr",
    "res_ptr",
    "g_ptr",
    "x_ptr",
    "y_ptr",
    "dv_ptr",
    "dq_ptr",
    "dk_ptr",
    "f_ptr",
    "df_ptr",
    "dx_ptr",
    "fq_ptr",
    "fk_ptr",
)
FLOAT_ARGS = ("inv_temp", "eps", "scale")
SASS_COUNTS = ("HGMMA", "STL", "LDL", "BAR.SYNC", "SHFL", "MUFU.EX2")


def signature(fn, constants: dict) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in constants:
            sig[name] = "constexpr"
        elif name in HALF_INPUTS:
            sig[name] = "*bf16"
        elif name in ("w_ptr", "wq_ptr", "wk_ptr"):
            sig[name] = "*fp16"
        elif name in ("hs_ptr", "hr_ptr"):
            sig[name] = "*bf16"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32"
        else:
            sig[name] = "fp32" if name in FLOAT_ARGS else "i32"
    return sig


def report(fn, constants: dict, warps: int, stages: int, maxnreg: int | None = None) -> str:
    constants = {k: v for k, v in constants.items() if k in fn.arg_names}  # blocks a kernel does not take
    src = ASTSource(
        fn=fn,
        signature=signature(fn, constants),
        constexprs={(fn.arg_names.index(k),): v for k, v in constants.items()},
    )
    compiled = triton.compile(
        src,
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": warps, "num_stages": stages, "maxnreg": maxnreg},
    )
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        Path(cubin).write_bytes(compiled.asm["cubin"])
        usage = subprocess.run(
            [CUOBJDUMP, "--dump-resource-usage", cubin], capture_output=True, text=True
        ).stdout
        sass = subprocess.run([CUOBJDUMP, "--dump-sass", cubin], capture_output=True, text=True).stdout
    resources = re.search(r"REG:\d+ STACK:\d+", usage)
    counts = " ".join(f"{name}={sass.count(name)}" for name in SASS_COUNTS)
    return f"{resources.group(0) if resources else usage.strip()} SMEM:{compiled.metadata.shared} {counts}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warps", type=int, default=8)
    parser.add_argument("--stages", type=int, default=1)
    parser.add_argument("--head-dim", type=int, default=64, choices=(64, 128))
    parser.add_argument(
        "--chunk", type=int, default=None, help="tokens per chunk (default: as the kernels pick)"
    )
    parser.add_argument("--value-block", type=int, default=64, help="value columns per program")
    args = parser.parse_args()
    d = args.head_dim
    blocks = dict(BD=d, BDP=d, BV=args.value_block, BT=args.chunk or (64 if d <= 64 else 32))
    atomic = d > args.value_block
    kernels = [
        (
            "state walk",
            KERNELS["state"],
            dict(MODE=1, BWD=False, REVERSE=False, HAS_MASK=False, WRITE_CHUNKS=True),
        ),
        (
            "R walk",
            KERNELS["state"],
            dict(MODE=1, BWD=True, REVERSE=True, HAS_MASK=False, WRITE_CHUNKS=True),
        ),
        ("forward", KERNELS["fwd"], dict(MODE=1, CAUSAL=True, HAS_MASK=False, STORE_RES=True)),
        ("dq", KERNELS["dq"], dict(MODE=1, CAUSAL=True, HAS_MASK=False, ATOMIC=atomic)),
        ("dk, dv", KERNELS["dkv"], dict(MODE=1, CAUSAL=True, HAS_MASK=False, ATOMIC=atomic)),
        ("map fwd", K._map_fwd_kernel, dict(MODE=1, BT=64)),  # hedgehog_features, tiles of 64 as launched
        ("map bwd", K._map_bwd_kernel, dict(MODE=1, BT=64)),
        ("window fwd", K._window_fwd_kernel, dict(BT=64, STORE_RES=True, HAS_MASK=False)),  # the hybrid
        ("window dq", K._window_dq_kernel, dict(BT=64, BV=min(128, d), NV=1, HAS_MASK=False)),
        ("window dk, dv", K._window_dkv_kernel, dict(BT=64, BV=min(128, d), NV=1, HAS_MASK=False)),
    ]
    print(
        f"Hedgehog softmax form, causal, D={d}, chunk={blocks['BT']}, value block={blocks['BV']}, num_warps={args.warps}, "
        f"num_stages={args.stages}, sm_90"
    )
    for name, fn, constants in kernels:
        print(f"{name:10s} {report(fn, {**blocks, **constants}, args.warps, args.stages)}")


if __name__ == "__main__":
    main()
