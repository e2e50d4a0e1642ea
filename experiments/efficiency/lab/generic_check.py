"""The generic chunked kernels (baseline features computed outside) on the GPU against float64.

An illegal memory access poisons the CUDA context for the rest of the process, so every case
runs in a child process with CUDA_LAUNCH_BLOCKING=1: a crash names the launch that made it
and the next case still runs. A case is (feature dim F, value dim, tokens) under one launch
configuration (`tune.py`'s syntax). Prints one JSON line per case.

    python -m experiments.efficiency.lab.generic_check [--configs "default;state=4:1,dq=4:1"]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from hedgehog.paths import project_root

CASES = [(64, 64, 777), (128, 64, 777), (256, 64, 777), (96, 64, 777), (64, 128, 777), (64, 64, 4000)]


def child(config: str, f: int, dv: int, t: int) -> dict:
    """Relative errors of the generic kernels' output and gradients against float64, one case."""
    import torch

    from experiments.efficiency.lab.tune import parse
    from hedgehog.attention import quadratic_linear_attention
    from hedgehog.kernels import launch_overrides, linear_attention

    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: TRITON_INTERPRET=1, for trying the script
    b, h = 2, 4
    # 1+ELU-like positive features, bf16 as the layer passes them
    fq, fk = (torch.nn.functional.elu(torch.randn(b, h, t, f, device=dev)) + 1 for _ in range(2))
    v = torch.randn(b, h, t, dv, device=dev)
    g = torch.randn(b, h, t, dv, device=dev)
    ins = [x.to(torch.bfloat16).requires_grad_() for x in (fq, fk, v)]
    with launch_overrides(**parse(config)):
        out, _ = linear_attention(*ins)
        grads = torch.autograd.grad(out, ins, g.to(torch.bfloat16))
    refs = [x.detach().double().requires_grad_() for x in ins]
    ref = quadratic_linear_attention(*refs, causal=True, eps=1e-6)
    ref_grads = torch.autograd.grad(ref, refs, g.double())
    errors = {}
    for name, a, r in zip(("out", "dfq", "dfk", "dv"), (out, *grads), (ref, *ref_grads), strict=True):
        errors[name] = ((a.double() - r).norm() / r.norm()).item()
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="default")
    parser.add_argument("--cases", default=None, help='"F,DV,T;F,DV,T" (default: all of CASES)')
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, f, dv, t = args.child
        print("RESULT " + json.dumps(child(config, int(f), int(dv), int(t))), flush=True)
        return
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}
    cases = [tuple(int(x) for x in c.split(",")) for c in args.cases.split(";")] if args.cases else CASES
    for config in args.configs.split(";"):
        for f, dv, t in cases:
            proc = subprocess.run(
                [sys.executable, "-m", "experiments.efficiency.lab.generic_check", "--child", config, str(f), str(dv), str(t)],
                capture_output=True, text=True, env=env, timeout=300, cwd=project_root(),
            )  # fmt: skip
            line = {"config": config, "F": f, "DV": dv, "T": t, "rc": proc.returncode}
            results = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if results:
                errors = json.loads(results[-1][7:])
                line.update(errors=errors, ok=max(errors.values()) <= 1e-2)
            else:
                line.update(ok=False, tail=proc.stderr[-1500:])
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
