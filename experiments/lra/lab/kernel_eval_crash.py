"""Which shapes break the fused non-causal Hedgehog kernel on the GPU (LRA sMNIST test: batch 250 x 4 heads x 784).

    CUDA_LAUNCH_BLOCKING=1 python -m experiments.lra.lab.kernel_eval_crash

Each shape runs in its own process (an illegal memory access poisons the CUDA context): forward under
inference_mode in bfloat16, and the float32 PyTorch form (the library's HedgehogFeatureMap) for the
relative error. Prints one line per shape. The layout: q, k, v contiguous (``plain``), views of one
(B, T, 3, H, D) projection as the project's models make them (``fused``), or the whole LRA classifier
(2 layers of width 128, 4 heads, Hedgehog attention as conf/attention/hedgehog.yaml builds it) under
bf16 autocast on random pixels (``model``). The probe lowers hedgehog.kernels.ops.MIN_COMPILED_DIM so
that head dim 32, which the kernels now refuse on the GPU, runs through them.

2026-12-03, second call (kernel_eval_crash_h200.log): at head dim 32 every plain and fused shape ran but
was 27-29% off the PyTorch form (bf16 inputs; the same kernels under the interpreter, fp32, with the GPU's
64-wide padded blocks forced, match it to 2e-7), and the whole classifier at batch 250 crashed with an
illegal memory access. The head-dim-64 rows (added after that call, the GPU tests' validated size) are the
control. Sixth session (kernel_eval_crash_padded_h200.log), with the head-dim and value blocks padded to
64 on the GPU as the feature blocks already were (ops._dims): every head-dim-32 shape 1.9e-3 off (bf16
noise, the same as the head-dim-64 rows) and the classifier at batch 250 runs with finite logits.
"""

from __future__ import annotations

import subprocess
import sys

LAYOUTS = ("plain", "fused", "model")
SHAPES = [  # batch, tokens, key padding mask, grad, layout (index into LAYOUTS), head dim
    (32, 784, False, True, 0, 32),
    (64, 784, False, False, 0, 32),
    (125, 784, False, False, 0, 32),
    (250, 784, False, False, 0, 32),
    (250, 784, True, False, 0, 32),
    (250, 768, False, False, 0, 32),
    (250, 800, False, False, 0, 32),
    (250, 2000, True, False, 0, 32),
    (512, 256, False, False, 0, 32),
    (1024, 64, False, False, 0, 32),
    (32, 784, False, True, 1, 32),
    (250, 784, False, False, 1, 32),
    (250, 784, True, False, 1, 32),
    (32, 784, True, False, 2, 32),
    (250, 784, True, False, 2, 32),
    (32, 784, False, True, 0, 64),
    (250, 784, False, False, 0, 64),
    (250, 784, True, False, 1, 64),
    (250, 784, True, False, 2, 64),
]


def whole_model(b: int, t: int, d: int) -> str:
    import torch
    from hydra.utils import instantiate

    from hedgehog.config import compose
    from hedgehog.models import TransformerClassifier

    attention = instantiate(compose(["experiment=lra", "data.task=smnist"])["attention"])
    model = TransformerClassifier(256, 10, 4 * d, 2, 4, t, attention).cuda()
    ids = torch.randint(0, 256, (b, t), device="cuda")
    mask = torch.ones(b, t, dtype=torch.long, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids, mask)
    torch.cuda.synchronize()
    return f"ok logits finite: {bool(torch.isfinite(logits).all())}"


def one(b: int, t: int, masked: bool, grad: bool, layout: str = "plain", d: int = 32) -> str:
    import torch

    from hedgehog.kernels import ops

    ops.MIN_COMPILED_DIM = 16  # head dim 32 through the kernels (refused by default on the GPU)

    from hedgehog.attention import HedgehogFeatureMap
    from hedgehog.attention.linear_attention import noncausal_linear_attention
    from hedgehog.kernels import hedgehog_attention

    if layout == "model":
        return whole_model(b, t, d)
    h = 4
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
        b, t, masked, grad, layout, d = (int(x) for x in sys.argv[1:])
        print(one(b, t, bool(masked), bool(grad), LAYOUTS[layout], d))
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
    for (b, t, masked, grad, layout, d), p in procs:
        out = p.communicate()[0].strip().splitlines()
        last = next(
            (line for line in reversed(out) if "ok" in line or "Error" in line), out[-1] if out else ""
        )
        print(
            f"{LAYOUTS[layout]:5} D={d:3d} B={b:4d} T={t:5d} mask={masked!s:5} grad={grad!s:5} rc={p.returncode}: "
            f"{last[:200]}"
        )
