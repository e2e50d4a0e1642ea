#!/usr/bin/env bash
# MQAR at the paper scale's protocol (conf/experiment_scale/associative_recall/paper.yaml: vocabulary 8,192,
# 2 layers, 1 head, 100k training sequences, early stop at 99% validation accuracy) on one H200, for a
# chosen slice of its grid at a longer step budget than the config's 1,000 steps. Every run stops at
# MQAR_STEPS or, gracefully, at MAX_TIME (then tested and published, its record's global_step saying where
# it stopped); jobs share the GPU (their steps are bound by kernel launches, so the GPU serves the jobs in
# turn: about 150-200 steps a second in all, measured 2026-12-03). From the repository root:
#   ATTENTIONS="softmax,hedgehog,elu1" MQAR_STEPS=20000 MAX_TIME=00:00:08:00 bash experiments/associative_recall/lab/h200_mqar.sh
# Records go to experiments/associative_recall/records/paper/ (python -m experiments.associative_recall.make_table
# --scale paper), or to RECORDS. The 2026-12-03 probe (lab/h200_mqar_probe/NOTE.md) was
#   RECORDS=$PWD/experiments/associative_recall/lab/h200_mqar_probe/records ATTENTIONS="softmax,hedgehog" \
#   LRS="1e-3,3e-3,1e-2" SEEDS=0 JOBS=6 MQAR_STEPS=4000 bash experiments/associative_recall/lab/h200_mqar.sh
# The lists are quoted: unquoted, Hydra reads `key=a,b` as a sweep over the list's own values, and the
# first H200 call of the probe (2026-12-03) ran the paper scale's whole grid of maps x rates that way.
# EXTRA adds overrides to every run (e.g. the softmax control's ablations, next: EXTRA="task.weight_decay=0"
# or trainer.precision=32 with RECORDS pointing at a lab folder, so they stay out of the table); LOG_NAME
# names the log, for two calls at once.
# On a lent GPU machine set LOGS=$OUT/logs: the log then comes back even when a call is cut short.
set -u
records=${RECORDS:-$PWD/experiments/associative_recall/records/paper}
logs=${LOGS:-outputs/associative_recall/h200_logs}
mkdir -p "$logs"
export WANDB_MODE=disabled HF_HUB_OFFLINE=1
timeout "${MQAR_TIMEOUT:-580}" python3 -m hedgehog.train -m experiment=associative_recall \
  sweep=associative_recall scale=paper publish=true "paths.published_dir=$records" logger=csv \
  "associative_recall.sweep_attentions=\"${ATTENTIONS:-softmax,hedgehog}\"" \
  "associative_recall.sweep_levels=\"${LEVELS:-t64}\"" "associative_recall.sweep_widths=\"${WIDTHS:-64}\"" \
  "associative_recall.sweep_lrs=\"${LRS:-1e-3}\"" "associative_recall.sweep_seeds=\"${SEEDS:-0,1}\"" \
  "hydra.launcher.n_jobs=${JOBS:-6}" "trainer.max_steps=${MQAR_STEPS:-4000}" \
  "+trainer.max_time=${MAX_TIME:-00:00:08:00}" trainer.val_check_interval=500 ${EXTRA:-} \
  > "$logs/${LOG_NAME:-mqar_sweep}.log" 2>&1
echo "mqar rc=$?"
