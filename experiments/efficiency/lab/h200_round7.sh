#!/usr/bin/env bash
# Issue 15, ninth session, first of its calls: the hybrid layer with key padding masks and in float16 on
# its kernels (the GPU tests of what round 6 cleared), launch options of `mapped` (map kernels + generic
# chunked kernels) for both shapes through lab/tune.py (value blocks of 64 and chunks of 64 at Llama-2's
# head dim 128, chunks of 128 and 32 at GPT-2's), and the map kernels' profile (generic_split). Run with
# the prologue of h200_round6.sh's call (wheels to /tmp/site, PYTHONPATH). Logs straight into $OUT.
set -o pipefail
OUT=${OUT:-outputs/efficiency}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
timeout 170 python3 -m pytest -q -m gpu tests/test_kernels.py -p no:cacheprovider \
  -k "window_layer or float16 or feature_map or window_kernel_with_key_mask" 2>&1 | grep -v -i warn \
  | tee "$OUT/pytest_gpu.log" | tail -6
timeout 190 python3 -m experiments.efficiency.lab.tune --method mapped --shapes llama2 --lengths 2048 \
  --configs "default;bv=64;chunk=64;chunk=64,bv=64;bv=64,state=4,fwd=4,dq=4,dkv=4" \
  --json "$OUT/tune_mapped_llama2.json" 2>&1 | grep -v -i warn | tee "$OUT/tune_mapped_llama2.log" | cut -c1-400
timeout 130 python3 -m experiments.efficiency.lab.tune --method mapped --shapes gpt2 --lengths 1024,32768 \
  --configs "default;chunk=128;chunk=32;state=8,fwd=8,dq=8,dkv=8" \
  --json "$OUT/tune_mapped_gpt2.json" 2>&1 | grep -v -i warn | tee "$OUT/tune_mapped_gpt2.log" | cut -c1-400
timeout 80 python3 -m experiments.efficiency.lab.generic_split 2>&1 | grep -v -i warn \
  | tee "$OUT/generic_split.log" | tail -40
# whole script: at most 170 + 190 + 130 + 80 = 570 s of timeouts (one device call)
