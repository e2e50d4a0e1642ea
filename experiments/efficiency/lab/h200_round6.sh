#!/usr/bin/env bash
# Issue 15's next GPU call (prepared in the eighth session, after its device time was spent): the hybrid's
# backward writing dfq and dfk in place and the key mask (every GPU test), the hybrid at the lengths
# round 5 did not reach (Llama-2 2k-32k, GPT-2 32k and 128k), then the Llama-2 7B-shaped model
# with the hybrid's kernels against SDPA (the row of experiments/llama_samsum/README.md measured before
# them). Logs straight into $OUT.
set -o pipefail
OUT=${OUT:-outputs/efficiency}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
# every GPU test (the generic backward's in-place output serves all linear kernels); the device lacks lm_eval
# and nbformat, so their modules are left out of collection
timeout 200 python3 -m pytest -q -m gpu tests -p no:cacheprovider --ignore tests/test_lm_eval.py \
  --ignore tests/test_notebook.py 2>&1 | tee "$OUT/pytest_gpu.log" | tail -8
timeout 130 python3 -m experiments.efficiency.lab.hybrid_bench --shapes llama2 2>&1 | grep -v Warn \
  | tee "$OUT/hybrid_bench_llama2.log"
timeout 80 python3 -m experiments.efficiency.lab.hybrid_bench --shapes gpt2 --lengths 1024,32768,131072 2>&1 \
  | grep -v Warn | tee "$OUT/hybrid_bench_gpt2.log"
timeout 170 python3 -m experiments.llama_samsum.lab.h200_speed --attentions softmax hedgehog_window \
  --budget-s 120 --out "$OUT/h200_speed.md" 2>&1 | grep -v -i warn | tail -20
# whole script: at most 200 + 130 + 80 + 170 = 580 s of timeouts (one device call)
