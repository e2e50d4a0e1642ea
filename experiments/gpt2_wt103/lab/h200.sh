#!/usr/bin/env bash
# GPT-2 from scratch at a larger budget than the CPU's, on one H200: every row and seed of a call at once on
# the one GPU (8 processes), the embedded task (Brown corpus, 8,192-token BPE) with a larger model and more
# tokens. Records go to experiments/gpt2_wt103/records/embedded-h200/ (tables/embedded-h200/ via
#   python -m experiments.gpt2_wt103.make_table --scale embedded-h200).
# Run from the repository root with the project on PYTHONPATH and hydra/omegaconf installed:
#   STEPS=2000 bash experiments/gpt2_wt103/lab/h200.sh
#   ATTENTIONS="h3 hyena h3_hybrid" STEPS=2000 bash experiments/gpt2_wt103/lab/h200.sh
# The second call runs the sub-quadratic baselines (H3, Hyena, Hybrid H3) at the same budget, 6 processes:
# with the linear rows' 8 in one call the GPU would be shared 14 ways, past one 9-minute call. Both calls
# publish into the same records folder and the table reads them all.
# Every run stops at STEPS (the same token budget for every row); MAX_TIME is only a safety cap (a run
# it cuts short says so in its record's global_step).
# On a lent GPU machine set LOGS=$OUT/logs: the logs then come back even when a call is cut short.
set -u
steps=${STEPS:-2000}
attentions=${ATTENTIONS:-softmax hedgehog elu1 performer}
max_time=${MAX_TIME:-00:00:06:30}
logs=${LOGS:-outputs/gpt2_wt103/h200_logs}
mkdir -p "$logs"
overrides=(
  experiment=gpt2_wt103 publish=true "paths.published_dir=$PWD/experiments/gpt2_wt103/records/embedded-h200"
  logger=csv callbacks.progress_bar=null trainer.enable_progress_bar=false "tags=[gpt2_wt103,h200]"
  model.config.n_layer=6 model.config.n_embd=384 model.config.n_head=6 model.config.n_positions=512
  data.seq_len=512 data.batch_size=16 data.eval_batch_size=32 task.optimizer.lr=1e-3 task.warmup_steps=100
  "trainer.max_steps=$steps" trainer.val_check_interval=200 "+trainer.max_time=$max_time"
)
# the BPE and the token streams, once, before the runs share the cache
python3 -c "from hedgehog.config import compose; from hydra.utils import instantiate; \
instantiate(compose(['experiment=gpt2_wt103'])['data']).prepare_data()"
for attention in $attentions; do
  for seed in 0 1; do
    python3 -m hedgehog.train "${overrides[@]}" "attention=$attention" "seed=$seed" \
      > "$logs/$attention-s$seed.log" 2>&1 &
  done
done
wait
python3 -m experiments.gpt2_wt103.make_table --scale embedded-h200
