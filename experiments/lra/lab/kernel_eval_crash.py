"""Which shapes crash the fused non-causal Hedgehog kernel on the GPU (LRA sMNIST test: batch 250 x 4 heads x 784).

    CUDA_LAUNCH_BLOCKING=1 python -m experiments.lra.lab.kernel_eval_crash

Each shape runs in its own process (an illegal memory access poisons the CUDA context): forward under
inference_mode in bfloat16, and the float32 PyTorch form for the relative error. Prints one line per shape.
"""

from __future__ import annotations

import subprocess
import sys

SHAPES = [  # batch, tokens, key padding mask, grad
    (32, 784, False, True),
    (64, 784, False, False),
    (125, 784, False, False),
    (250, 784, False, False),
    (250, 784, True, False),
    (250, 768, False, False),
    (250, 800, False, False),
    (250, 2000, True, False),
    (512, 256, False, False),
    (1024, 64, False, False),
]


def one(b: int, t: int, masked: bool, grad: bool) -> str:
    import torch

    from hedgehog.attention import linear_attention as la
    from hedgehog.kernels import hedgehog_attention

    h, d = 4, 32
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, h, t, d, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    w = (torch.randn(h, d, d, device="cuda", generator=g) * 0.1).requires_grad_(grad)
    bias = torch.zeros(h, d, device="cuda")
    mask = torch.ones(b, t, dtype=torch.bool, device="cuda") if masked else None
    if grad:
        o, _ = hedgehog_attention(q, k, v, w, bias, w, bias, causal=False, key_padding_mask=mask)
        o.float().sum().backward()
    else:
        with torch.inference_mode():
            o, _ = hedgehog_attention(q, k, v, w, bias, w, bias, causal=False, key_padding_mask=mask)
    torch.cuda.synchronize()
    with torch.no_grad():
        zq, zk = q.float() @ w, k.float() @ w
        fq = torch.cat([torch.softmax(zq, -1), torch.softmax(-zq, -1)], -1)
        fk = torch.cat([torch.softmax(zk, -1), torch.softmax(-zk, -1)], -1)
        ref = la.noncausal_linear_attention(fq, fk, v.float())
    return f"ok rel err {((o.float() - ref).norm() / ref.norm()).item():.2e}"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        b, t, masked, grad = (int(x) for x in sys.argv[1:])
        print(one(b, t, bool(masked), bool(grad)))
        sys.exit(0)
    procs = [
        (
            s,
            subprocess.Popen(
                [sys.executable, "-m", "experiments.lra.lab.kernel_eval_crash", *map(str, map(int, s))],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
        for s in SHAPES
    ]
    for (b, t, masked, grad), p in procs:
        out = p.communicate()[0].strip().splitlines()
        last = next(
            (line for line in reversed(out) if "ok" in line or "Error" in line), out[-1] if out else ""
        )
        print(f"B={b:4d} T={t:5d} mask={masked!s:5} grad={grad!s:5} rc={p.returncode}: {last[:200]}")
