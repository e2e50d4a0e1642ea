#!/usr/bin/env bash
# How many steps the MQAR control needs (second H200 attempt, after lab/h200_mqar_first_attempt/): softmax
# and Hedgehog at the shortest level (64 tokens, 4 pairs, vocabulary 8,192), width 64, one seed, the
# three learning rates {1e-3, 3e-3, 1e-2}, up to MQAR_STEPS steps (default 4,000; the first attempt's 1,000
# left softmax at chance), validation every 250 steps, early stop at 99%. Records and logs go to
# experiments/associative_recall/lab/h200_mqar_probe/. Run from the repository root on the GPU machine:
#   MQAR_STEPS=4000 bash experiments/associative_recall/lab/h200_mqar_probe.sh
# The lists are quoted: unquoted, Hydra reads `key=a,b` as a sweep over the list's own values, and the
# first H200 call of this script (2026-12-03) ran the paper scale's whole grid of maps x rates that way.
set -u
out=experiments/associative_recall/lab/h200_mqar_probe
mkdir -p "$out"
timeout "${MQAR_TIMEOUT:-540}" python3 -m hedgehog.train -m experiment=associative_recall \
  sweep=associative_recall scale=paper publish=true "paths.published_dir=$PWD/$out/records" \
  logger=csv 'associative_recall.sweep_attentions="softmax,hedgehog"' associative_recall.sweep_levels=t64 \
  associative_recall.sweep_widths=64 'associative_recall.sweep_lrs="1e-3,3e-3,1e-2"' \
  associative_recall.sweep_seeds=0 hydra.launcher.n_jobs=6 "trainer.max_steps=${MQAR_STEPS:-4000}" \
  trainer.val_check_interval=250 > "$out/sweep.log" 2>&1
echo "mqar probe rc=$?"
