#!/usr/bin/env bash
# Issue 15's round-5 GPU call: the hybrid's backward split into a dq kernel and a dk/dv kernel without atomics
# (the linear part on views, its query gradient direct): its GPU tests, `hybrid_bench` at three lengths per shape
# and `hybrid_profile` (window kernels at 4 and 8 warps). Logs straight into $OUT (four files, no archive: a call
# cut by the device's limit still returns what it wrote).
set -o pipefail
OUT=${OUT:-outputs/efficiency}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
timeout 90 python3 -m pytest -q -m gpu tests/test_kernels.py -k "window or feature_map" -p no:cacheprovider 2>&1 \
  | tee "$OUT/pytest_gpu.log" | tail -8
timeout 110 python3 -m experiments.efficiency.lab.hybrid_bench --lengths 1024,2048,8192,32768,131072 2>&1 \
  | grep -v Warn | tee "$OUT/hybrid_bench.log"
timeout 110 python3 -m experiments.efficiency.lab.hybrid_profile 2>&1 | grep -v -i warn | tee "$OUT/hybrid_profile.log"
