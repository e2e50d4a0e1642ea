"""The `generic` and `mapped` methods of the sweep split into their parts (GPU): the Hedgehog map for q
and k (fwd+bwd, bf16 features) in PyTorch and as the map kernels (`hedgehog.kernels.hedgehog_features`),
and the generic chunked kernels on features already written (fwd+bwd), beside the fused kernels, at one
length of each shape. Says what `generic`'s and `mapped`'s times in `tables/h200/results_h200.md` are made of.

    python -m experiments.efficiency.lab.generic_split [--length 1024]
"""

from __future__ import annotations

import argparse

import torch

from experiments.efficiency.attention_bench import SHAPES, hedgehog_map, make_forward
from experiments.efficiency.timing import print_kernels, profile_kernels, timer


def split(shape: str, length: int) -> None:
    cfg = SHAPES[shape]
    h, d, b = cfg["H"], cfg["D"], cfg["tokens"] // length
    torch.manual_seed(0)
    fmap = hedgehog_map(h, d, "cuda")
    q, k, v = (
        torch.randn(b, h, length, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        for _ in range(3)
    )
    grad = torch.randn_like(v)
    with torch.no_grad():
        fq0, fk0 = (x.to(torch.bfloat16) for x in fmap.pytorch_features(q, k))
    fq, fk = (x.detach().requires_grad_() for x in (fq0, fk0))
    from hedgehog.kernels import hedgehog_features, linear_attention

    params = list(fmap.parameters())

    def map_only():
        a, c = fmap.pytorch_features(q, k)
        torch.autograd.backward((a.to(torch.bfloat16), c.to(torch.bfloat16)), (fq0, fk0))

    def map_kernels():
        a = hedgehog_features(q, fmap.weight_q, fmap.bias_q)
        c = hedgehog_features(k, fmap.weight_k, fmap.bias_k)
        torch.autograd.backward((a, c), (fq0, fk0))

    def kernels_only():
        linear_attention(fq, fk, v, causal=True)[0].backward(grad)

    def whole(method):
        fn = make_forward(method, q, k, v, fmap)
        return lambda: fn().backward(grad)

    time_ms = timer("cuda")
    grads = [q, k, v, fq, fk, *params]
    rows = {
        "map fwd+bwd (PyTorch, features to bf16)": time_ms(map_only, grads),
        "map fwd+bwd (map kernels)": time_ms(map_kernels, grads),
        "generic kernels on written features": time_ms(kernels_only, grads),
        "generic (PyTorch map + generic kernels)": time_ms(whole("generic"), grads),
        "mapped (map kernels + generic kernels)": time_ms(whole("mapped"), grads),
        "fused": time_ms(whole("fused"), grads),
    }
    print(f"{shape} T={length} B={b} H={h} D={d} F={2 * d}")
    for name, ms in rows.items():
        print(f"  {ms:8.3f} ms  {name}")
    for name, step in (("map kernels", map_kernels), ("mapped", whole("mapped"))):
        for x in grads:
            x.grad = None
        total, kernels = profile_kernels(step, "cuda")
        print(f"  {name} fwd+bwd, one profiled call: device kernels {total:.3f} ms in all", flush=True)
        print_kernels(kernels, 8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=None, help="default: each shape's shortest")
    args = parser.parse_args(argv)
    for shape in SHAPES:
        split(shape, args.length or SHAPES[shape]["lengths"][0])


if __name__ == "__main__":
    main()
