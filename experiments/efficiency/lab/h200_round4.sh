#!/usr/bin/env bash
# Issue 15's round-4 GPU call: every GPU test (the map kernels now dispatched by HedgehogFeatureMap on CUDA,
# the hybrid's kernels with the window factor's gradient from the rows' sums, the hybrid layer's dispatch), then
# the hybrid against the Hedgehog kernels (`hybrid_bench`) and where its time goes (`hybrid_profile`). Same
# environment as h200_round3.sh; logs bundled into $OUT/round4.tgz.
set -o pipefail
OUT=${OUT:-outputs/efficiency}
WORK=$(mktemp -d)
mkdir -p "$OUT"
trap 'tar czf "$OUT/round4.tgz" -C "$WORK" .' EXIT
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$WORK/gpu.txt"
timeout "${TEST_S:-240}" python3 -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tee "$WORK/pytest_gpu.log" | tail -25
timeout 120 python3 -m experiments.efficiency.lab.hybrid_bench 2>&1 | tee "$WORK/hybrid_bench.log" | grep -v Warn
timeout "${PROFILE_S:-200}" python3 -m experiments.efficiency.lab.hybrid_profile 2>&1 | tee "$WORK/hybrid_profile.log"
