#!/usr/bin/env bash
# Issue 4's GPU session, in one call: the benchmark (which first checks the fused kernel against
# the float64 reference, outputs and every gradient, and times nothing that fails), then the
# kernels' GPU tests. Run from the repository root:
#   bash experiments/efficiency/lab/gpu_session.sh              # everything
#   TESTS="-k layer_dispatch" bash experiments/efficiency/lab/gpu_session.sh --shapes gpt2
# Arguments go to `python -m experiments.efficiency.bench`; TESTS selects GPU tests. Logs and results
# go to $OUT (default outputs/efficiency, as the benchmark's). fla-core, when its wheel is in .whl/,
# is installed to /tmp/site for the fla column.
set -o pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-outputs/efficiency}
mkdir -p "$OUT"
if ls .whl/fla_core-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/fla_core-*.whl \
    && export PYTHONPATH=src:/tmp/site
fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
python3 -m experiments.efficiency.bench --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log"
# shellcheck disable=SC2086
python3 -m pytest -q -m gpu $TESTS tests/test_kernels.py -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.log" | tail -15
