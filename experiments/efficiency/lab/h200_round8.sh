#!/usr/bin/env bash
# Issue 15, ninth session, second call: the hybrid kernels' rows without any key (1/den' = 0 there: float16
# overflowed 1/eps into NaN dk in round 7's masked float16 layer test), the generic kernels in chunks of 64
# at Llama-2's head dim (round 7's tune: 25.1 against 31.9 ms for mapped), the fused kernels at chunk 64 there
# for comparison, then the sweep with sdpa, fused and mapped at both shapes (run H) and the hybrid at
# Llama-2's 2k (its linear part runs the generic kernels). Prologue as in
# h200_round6.sh's call. Logs straight into $OUT (seven files: the device returns at most eight).
set -o pipefail
OUT=${OUT:-outputs/efficiency}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
timeout 130 python3 -m pytest -q -m gpu tests/test_kernels.py -p no:cacheprovider \
  -k "window or generic or float16 or dispatch" 2>&1 | grep -v -i warn | tee "$OUT/pytest_gpu.log" | tail -6
timeout 60 python3 -m experiments.efficiency.lab.tune --shapes llama2 --lengths 2048 --configs "default;chunk=64" \
  --json "$OUT/tune_fused_llama2.json" 2>&1 | grep -v -i warn | cut -c1-300
timeout 200 python3 -m experiments.efficiency.bench --methods sdpa,fused,mapped --shapes gpt2,llama2 \
  --out "$OUT" 2>&1 | grep -v -i warn | tee "$OUT/bench_mapped.log" | tail -40
timeout 40 python3 -m experiments.efficiency.lab.hybrid_bench --shapes llama2 --lengths 2048 2>&1 | grep -v -i warn
# whole script: at most 130 + 60 + 200 + 40 = 430 s of timeouts (one device call)
