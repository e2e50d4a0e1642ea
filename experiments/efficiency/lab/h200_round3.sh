#!/usr/bin/env bash
# Issue 15's round-3 GPU call, in one go: the GPU tests of the kernels written in the seventh session without a
# GPU (the map kernels `hedgehog_features`, the hybrid's `window_attention` and the layer that dispatches it),
# then their timings: the generic method split into map and kernels (PyTorch map, map kernels), the hybrid
# against the Hedgehog kernels, and the sweep with `mapped` beside SDPA and fused (float64-gated first; fla and
# generic with METHODS=sdpa,fla,fused,generic,mapped). Run from the repository root with the packages of .whl/
# on PYTHONPATH (fla-core and einops among them for the fla column). Logs and the sweep's record are written to
# a scratch folder and bundled into $OUT/round3.tgz (a device call returns at most 8 files).
set -o pipefail
OUT=${OUT:-outputs/efficiency}
WORK=$(mktemp -d)
mkdir -p "$OUT"
trap 'tar czf "$OUT/round3.tgz" -C "$WORK" .' EXIT
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$WORK/gpu.txt"
timeout "${TEST_S:-200}" python3 -m pytest -q -m gpu tests/test_kernels.py -k "${TESTS:-feature_map or window}" \
  -p no:cacheprovider 2>&1 | tee "$WORK/pytest_gpu.log" | tail -15
if [ -z "${SKIP_SPLIT:-}" ]; then
  timeout 120 python3 -m experiments.efficiency.lab.generic_split 2>&1 | tee "$WORK/generic_split.log"
fi
timeout 150 python3 -m experiments.efficiency.lab.hybrid_bench 2>&1 | tee "$WORK/hybrid_bench.log"
timeout "${SWEEP_S:-200}" python3 -m experiments.efficiency.bench --methods "${METHODS:-sdpa,fused,mapped}" \
  --shapes "${SHAPES:-gpt2,llama2}" --out "$WORK" 2>&1 | tee "$WORK/bench_mapped.log" | grep -v Warning | tail -40
