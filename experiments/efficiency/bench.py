"""Attention efficiency benchmark (CLI): SDPA softmax, fla, the PyTorch reference and the fused kernels.

One process, causal attention, forward + backward, a fixed number of tokens per call
(B = tokens / T) at each length T, for two shapes: GPT-2 (H=12, D=64, F=128, 131,072 tokens)
and Llama-2 (H=32, D=128, F=256, 65,536 tokens). Before any timing, the fused kernels are
checked on the GPU against the float64 reference (outputs and every gradient); timings of a
failed check are not recorded. Ceilings (device copy bandwidth, bf16 matmul rate) are
measured in the same run; FLOPs and bytes of linear attention are counted in ``flops``.
Run from the repository root:

    python -m experiments.efficiency.bench                 # GPU: full sweep -> outputs/efficiency/
    python -m experiments.efficiency.bench --table-only A.json B.json   # merge runs into one table
    python -m experiments.efficiency.bench --model         # whole GPT-2 (HF, converted by
                                                           # hedgehog.models.conversion): training
                                                           # tokens/s at 1k and 8k, decoding at 32k x 8

On a machine without a GPU it times the PyTorch reference at small sizes and says so. A run
writes under outputs/efficiency/; its JSON becomes a committed record when copied to
records/<device>/, from which ``python -m experiments.efficiency.make_table`` makes tables/<device>/.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from experiments.efficiency.attention_bench import (
    CORRECTNESS_KEYS,
    CPU_SHAPES,
    KERNEL_METHODS,
    METHODS,
    SHAPES,
    check_kernel,
    run_sweep,
)
from experiments.efficiency.flops import annotate, measure_ceilings
from experiments.efficiency.model_bench import run_model
from experiments.efficiency.records import merge_records, select_shapes
from experiments.efficiency.render import markdown_table, write_outputs
from hedgehog.paths import output_dir


def main(argv: list[str] | None = None) -> None:
    """The sweep, the whole-model run (--model) or the merge of recorded runs (--table-only)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <project root>/outputs/efficiency)"
    )
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset of gpt2,llama2")
    parser.add_argument(
        "--lengths", default="", help="comma-separated subset of each shape's lengths (default: all)"
    )
    parser.add_argument(
        "--table-only",
        type=Path,
        nargs="+",
        help="regenerate table and plot from JSON records; with several, later rows replace earlier ones",
    )
    parser.add_argument(
        "--model", action="store_true", help="whole-model GPT-2 training and decoding instead"
    )
    parser.add_argument("--model-parts", default="train,decode", help="with --model: train, decode or both")
    args = parser.parse_args(argv)
    out = args.out or output_dir() / "efficiency"
    if args.model:
        run_model(out, tuple(p for p in ("train", "decode") if p in args.model_parts.split(",")))
        return
    if args.table_only:
        write_outputs(merge_records([json.loads(p.read_text()) for p in args.table_only]), out)
        return
    methods = tuple(m for m in args.methods.split(",") if m)
    cuda = torch.cuda.is_available()
    wanted = [s for s in args.shapes.split(",") if s]
    record: dict = {
        "software": {
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if cuda:
        import triton

        name = torch.cuda.get_device_name()
        record.update(device=name, stem="results_" + name.split()[-1].lower())
        record["software"]["triton"] = triton.__version__
        try:
            import fla

            record["software"]["fla"] = fla.__version__
        except ImportError:
            record["software"]["fla"] = None
        record["ceilings"] = measure_ceilings()
        print("ceilings", record["ceilings"], flush=True)
        shapes = select_shapes(SHAPES, wanted, args.lengths)
        for method in KERNEL_METHODS:
            if method not in methods:
                continue
            key = CORRECTNESS_KEYS[method]
            record[key] = {s: check_kernel(method, shapes[s]["H"], shapes[s]["D"]) for s in shapes}
            print(key, record[key], flush=True)
            worst = max(max(e.values()) for e in record[key].values())
            if not worst <= 1e-2:
                methods = tuple(m for m in methods if m != method)
                failed = f"{method} kernel failed the float64 check (worst {worst:.2e}); not timed"
                record["note"] = "; ".join(filter(None, (record.get("note"), failed)))
    else:
        record.update(device=f"CPU ({platform.processor() or platform.machine()})", stem="results_cpu")
        record["note"] = (
            "No GPU: only the PyTorch reference, at small sizes; the kernels and SDPA's "
            "FlashAttention need a CUDA GPU (run `make bench` there)."
        )
        print(record["note"], flush=True)
        shapes = select_shapes(CPU_SHAPES, wanted, args.lengths)
        methods = ("reference",)
    record["dtype"] = "bf16" if cuda else "fp32"
    record["rows"] = []
    for rows in run_sweep("cuda" if cuda else "cpu", shapes, methods):
        record["rows"] += rows  # outputs rewritten after each length: a cut run keeps what it measured
        annotate(record["rows"], record.get("ceilings"))
        write_outputs(record, out)
    print(markdown_table(record))


if __name__ == "__main__":
    main()
