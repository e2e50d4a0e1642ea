#!/usr/bin/env bash
# Issue 15, round 2 on the H200, in one device call: the GPU tests of the decoder replay and the kernels
# (head dim 32 through the padded blocks among them), then the whole-model benchmark, decode first
# (SDPA with both caches of transformers, Hedgehog eager, Hedgehog replayed) and training second, each
# part written to its own record so that one failing part loses nothing of the other. Run from the
# repository root with the packages of .whl/ on PYTHONPATH; logs and records go to $OUT.
set -o pipefail
OUT=${OUT:-outputs/efficiency}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
timeout "${TEST_S:-240}" python3 -m pytest -q -m gpu tests/test_decode_graph.py tests/test_kernels.py \
  tests/test_errors.py -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.log" | tail -25
for part in ${PARTS:-decode train}; do
  timeout "${PART_S:-200}" python3 -m experiments.efficiency.bench --model --model-parts "$part" --out "$OUT" \
    2>&1 | grep -v loss_type | tee "$OUT/bench_model_$part.log"
done
