"""Which shapes crash the fused non-causal Hedgehog kernel on the GPU (LRA sMNIST test: batch 250 x 4 heads x 784).

    CUDA_LAUNCH_BLOCKING=1 python -m experiments.lra.lab.kernel_eval_crash

Each shape runs in its own process (an illegal memory access poisons the CUDA context): forward under
inference_mode in bfloat16, and the float32 PyTorch form for the relative error. Prints one line per shape.
The layout: q, k, v contiguous (``plain``), views of one (B, T, 3, H, D) projection as the project's
models make them (``fused``), or the whole LRA classifier (2 layers of width 128, 4 heads, Hedgehog
attention as conf/attention/hedgehog.yaml builds it) under bf16 autocast on random pixels (``model``).
The 2026-12-03 call (kernel_eval_crash_h200.log) ran the plain shapes only, none crashed; its relative
errors (7.5e-2) are against a hand-written Hedgehog map sharing one W for q and k, since replaced by
the library's HedgehogFeatureMap, so they are to be measured again before being read.
"""

from __future__ import annotations

import subprocess
import sys

LAYOUTS = ("plain", "fused", "model")
SHAPES = [  # batch, tokens, key padding mask, grad, layout (index into LAYOUTS)
    (32, 784, False, True, 0),
    (64, 784, False, False, 0),
    (125, 784, False, False, 0),
    (250, 784, False, False, 0),
    (250, 784, True, False, 0),
    (250, 768, False, False, 0),
    (250, 800, False, False, 0),
    (250, 2000, True, False, 0),
    (512, 256, False, False, 0),
    (1024, 64, False, False, 0),
    (32, 784, False, True, 1),
    (250, 784, False, False, 1),
    (250, 784, True, False, 1),
    (32, 784, True, False, 2),
    (250, 784, True, False, 2),
]


def whole_model(b: int, t: int) -> str:
    import torch
    from hydra.utils import instantiate

    from hedgehog.config import compose
    from hedgehog.models import TransformerClassifier

    attention = instantiate(compose(["experiment=lra", "data.task=smnist"])["attention"])
    model = TransformerClassifier(256, 10, 128, 2, 4, t, attention).cuda()
    ids = torch.randint(0, 256, (b, t), device="cuda")
    mask = torch.ones(b, t, dtype=torch.long, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids, mask)
    torch.cuda.synchronize()
    return f"ok logits finite: {bool(torch.isfinite(logits).all())}"


def one(b: int, t: int, masked: bool, grad: bool, layout: str = "plain") -> str:
    import torch

    from hedgehog.attention import HedgehogFeatureMap
    from hedgehog.attention.linear_attention import noncausal_linear_attention
    from hedgehog.kernels import hedgehog_attention

    if layout == "model":
        return whole_model(b, t)
    h, d = 4, 32
    g = torch.Generator(device="cuda").manual_seed(0)
    if layout == "fused":
        qkv = torch.randn(b, t, 3, h, d, device="cuda", generator=g, dtype=torch.bfloat16)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
    else:
        q, k, v = (
            torch.randn(b, h, t, d, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3)
        )
    fmap = HedgehogFeatureMap(h, d).cuda().requires_grad_(grad)
    with torch.no_grad():  # off the identity start, so W and b matter
        for p in fmap.parameters():
            p.add_(0.1 * torch.randn(p.shape, device="cuda", generator=g))
    params = (fmap.weight_q, fmap.bias_q, fmap.weight_k, fmap.bias_k)
    mask = torch.ones(b, t, dtype=torch.bool, device="cuda") if masked else None
    if grad:
        o, _ = hedgehog_attention(q, k, v, *params, causal=False, key_padding_mask=mask)
        o.float().sum().backward()
    else:
        with torch.inference_mode():
            o, _ = hedgehog_attention(q, k, v, *params, causal=False, key_padding_mask=mask)
    torch.cuda.synchronize()
    with torch.no_grad():
        ref = noncausal_linear_attention(*fmap(q.float(), k.float()), v.float())
    return f"ok rel err {((o.float() - ref).norm() / ref.norm()).item():.2e}"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        b, t, masked, grad, layout = (int(x) for x in sys.argv[1:])
        print(one(b, t, bool(masked), bool(grad), LAYOUTS[layout]))
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
    for (b, t, masked, grad, layout), p in procs:
        out = p.communicate()[0].strip().splitlines()
        last = next(
            (line for line in reversed(out) if "ok" in line or "Error" in line), out[-1] if out else ""
        )
        print(
            f"{LAYOUTS[layout]:5} B={b:4d} T={t:5d} mask={masked!s:5} grad={grad!s:5} rc={p.returncode}: {last[:200]}"
        )
