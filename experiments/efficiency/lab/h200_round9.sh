#!/usr/bin/env bash
# Issue 15's follow-up GPU call, prepared in the ninth session after its device time was spent: the causal
# Hedgehog layer at head dim 128 on its new path (map kernels + generic chunked kernels; the dispatch is
# interpreter-tested), then what round 8's timeouts cut: the fused kernels at chunks of 64 for Llama-2 and
# the hybrid at Llama-2's 2k with the generic kernels' chunks of 64, then the Llama-2 7B-shaped model with
# the Hedgehog layer on its new path against SDPA (experiments/llama_samsum/README.md's first table).
# Run with the prologue of h200_round6.sh's call (wheels to /tmp/site, PYTHONPATH). Logs straight into $OUT.
set -o pipefail
OUT=${OUT:-outputs/efficiency}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -m gpu tests/test_kernels.py -p no:cacheprovider \
  -k "writes_features or dispatch or generic_features" 2>&1 | grep -v -i warn | tee "$OUT/pytest_gpu.log" | tail -6
timeout 120 python3 -m experiments.efficiency.lab.tune --shapes llama2 --lengths 2048 --configs "default;chunk=64" \
  --json "$OUT/tune_fused_llama2.json" 2>&1 | grep -v -i warn | cut -c1-300
timeout 80 python3 -m experiments.efficiency.lab.hybrid_bench --shapes llama2 --lengths 2048 2>&1 | grep -v -i warn \
  | tee "$OUT/hybrid_bench_llama2.log"
timeout 220 python3 -m experiments.llama_samsum.lab.h200_speed --attentions softmax hedgehog \
  --budget-s 150 --out "$OUT/h200_speed.md" 2>&1 | grep -v -i warn | tail -20
# whole script: at most 150 + 120 + 80 + 220 = 570 s of timeouts (one device call); seven files in $OUT
