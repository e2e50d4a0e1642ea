#!/usr/bin/env bash
# Issue 15's next GPU call, in one go: the GPU tests of the kernels written in the seventh session without a
# GPU (the map kernels `hedgehog_features`, the hybrid's `window_attention`), then their timings:
# the generic method split into map and kernels (PyTorch map, map kernels), the hybrid against the
# Hedgehog kernels, and the sweep with `mapped` beside SDPA, fla, fused and generic (float64-gated first). Run from
# the repository root with the packages of .whl/ on PYTHONPATH (fla-core and einops among them for the fla
# column: `pip download --no-deps -d .whl fla-core==0.6.0 einops`); logs and the sweep's record go to $OUT,
# bundled into one archive (a device call returns at most 8 files).
set -o pipefail
OUT=${OUT:-outputs/efficiency}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
timeout "${TEST_S:-200}" python3 -m pytest -q -m gpu tests/test_kernels.py -k "feature_map or window" \
  -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.log" | tail -15
timeout 120 python3 -m experiments.efficiency.lab.generic_split 2>&1 | tee "$OUT/generic_split.log"
timeout 150 python3 -m experiments.efficiency.lab.hybrid_bench 2>&1 | tee "$OUT/hybrid_bench.log"
timeout "${SWEEP_S:-200}" python3 -m experiments.efficiency.bench --methods sdpa,fla,fused,generic,mapped \
  --shapes "${SHAPES:-gpt2,llama2}" --out "$OUT" 2>&1 | tee "$OUT/bench_mapped.log" | tail -40
tar czf "$OUT/round3.tgz" -C "$OUT" --exclude round3.tgz .
