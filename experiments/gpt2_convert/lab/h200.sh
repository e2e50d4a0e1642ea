#!/usr/bin/env bash
# Table 10 at a larger budget than the CPU's, on one H200: the "pretrained GPT-2" (softmax, from scratch
# on the Brown corpus, the larger model of experiments/gpt2_wt103/lab/h200.sh) is trained first, then
# converted and finetuned on BBC News, every row and seed at once on the one GPU. Records go to
# experiments/gpt2_convert/records/embedded-h200/ (tables/embedded-h200/ via
#   python -m experiments.gpt2_convert.make_table --scale embedded-h200).
# Run from the repository root with the project on PYTHONPATH and hydra/omegaconf installed:
#   MAX_TIME=00:00:05:30 ATTENTIONS="softmax hedgehog t2r h3_hybrid hyena h3" bash experiments/gpt2_convert/lab/h200.sh
# (the committed tables/embedded-h200/: 13 processes sharing the GPU, 347 s in all). The mixers (H3, Hyena,
# Hybrid H3) replace the pretrained model's attention (MLPs and embeddings kept), have no stage 1 (no
# feature maps) and get stage 2 as the other rows. PRETRAIN=0 reuses the pretrained model an earlier call
# left in outputs/ on the same machine (for rows added later; every call publishes into the same folder).
# On a lent GPU machine set LOGS=$OUT/logs: the logs then come back even when a call is cut short.
set -u
pretrain_steps=${PRETRAIN_STEPS:-2000}
attentions=${ATTENTIONS:-softmax hedgehog t2r}
max_time=${MAX_TIME:-00:00:04:00}
logs=${LOGS:-outputs/gpt2_convert/h200_logs}
mkdir -p "$logs"
size=(
  model.config.n_layer=6 model.config.n_embd=384 model.config.n_head=6 model.config.n_positions=512
  data.seq_len=512 data.batch_size=16 data.eval_batch_size=32
)
# the pretrained model: the softmax run of the larger from-scratch setting (its record stays under outputs/)
if [ "${PRETRAIN:-1}" = 1 ]; then
  python3 -m hedgehog.train experiment=gpt2_wt103 attention=softmax seed=0 logger=csv callbacks.progress_bar=null \
    trainer.enable_progress_bar=false "${size[@]}" task.optimizer.lr=1e-3 task.warmup_steps=100 \
    "trainer.max_steps=$pretrain_steps" trainer.val_check_interval=500 "+trainer.max_time=$max_time" \
    > "$logs/pretrain.log" 2>&1 || { tail -30 "$logs/pretrain.log"; exit 1; }
fi
convert=(
  experiment=gpt2_convert publish=true "paths.published_dir=$PWD/experiments/gpt2_convert/records/embedded-h200"
  logger=csv callbacks.progress_bar=null trainer.enable_progress_bar=false "tags=[gpt2_convert,h200]"
  data.seq_len=512 data.batch_size=16 data.eval_batch_size=32
  "gpt2_convert.distill_steps=${DISTILL_STEPS:-200}" "gpt2_convert.finetune_steps=${FINETUNE_STEPS:-1000}"
)
case " $attentions " in
  *" softmax "*) python3 -m hedgehog.train "${convert[@]}" attention=softmax seed=0 task.distill_steps=0 \
    task.finetune_steps=0 > "$logs/zero_shot.log" 2>&1 & ;;
esac
for seed in 0 1; do
  for attention in $attentions; do
    # rows trained end to end have no stage 1 (T2R by choice; the mixers have no feature maps)
    case $attention in t2r | h3 | hyena | h3_hybrid) stages=(task.distill_steps=0) ;; *) stages=() ;; esac
    python3 -m hedgehog.train "${convert[@]}" "attention=$attention" "seed=$seed" ${stages[@]+"${stages[@]}"} \
      > "$logs/$attention-s$seed.log" 2>&1 &
  done
done
wait
python3 -m experiments.gpt2_convert.make_table --scale embedded-h200
