#!/usr/bin/env bash
# Issue 17 on a machine with N >= 2 GPUs of one host (not lent so far: only one-GPU machines were).
# 1. DDP scaling: GPT-2 from scratch with Hedgehog attention at the H200 budget's sizes (6 x 384, 512-token
#    context, lab/h200.sh) on 1, 2, ..., N GPUs with the same global batch (GLOBAL sequences a step, split
#    over the GPUs) and the same seed, STEPS steps each; records (with train/tokens_per_s) under
#    $OUT/ddp/records, then lab/ddp_scaling.py prints tokens/s, speed-up and efficiency per GPU count and
#    draws the loss curves together.
# 2. FSDP conversion: the Llama-family conversion recipe (experiment=llama_samsum, SmolLM2 stand-in from the
#    npm/registry files) with trainer=fsdp on N GPUs, both stages, saving the converted model; then
#    the saved model is loaded unsharded (hedgehog.generate.load) and must write the first test summary the
#    run itself wrote (greedy, the same prompt).
# From the repository root, the project on PYTHONPATH (as on the lent machines):
#   GPUS=4 STEPS=300 bash experiments/gpt2_wt103/lab/multi_gpu.sh
set -u
gpus=${GPUS:-$(python3 -c "import torch; print(torch.cuda.device_count())")}
steps=${STEPS:-300}
global=${GLOBAL:-32}
out=${OUT:-outputs/multi_gpu}
mkdir -p "$out/logs"
export NCCL_NVLS_ENABLE=0 WANDB_MODE=disabled HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "from hedgehog.config import compose; from hydra.utils import instantiate; \
instantiate(compose(['experiment=gpt2_wt103'])['data']).prepare_data()"
counts=1
n=2
while [ "$n" -le "$gpus" ]; do counts="$counts $n"; n=$((n * 2)); done
[[ " $counts " == *" $gpus "* ]] || counts="$counts $gpus"
for n in $counts; do
  if (( global % n )); then echo "skip $n GPUs: global batch $global does not split evenly"; continue; fi
  python3 -m hedgehog.train experiment=gpt2_wt103 attention=hedgehog seed=0 trainer=ddp "trainer.devices=$n" \
    logger=csv callbacks.progress_bar=null trainer.enable_progress_bar=false \
    model.config.n_layer=6 model.config.n_embd=384 model.config.n_head=6 model.config.n_positions=512 \
    data.seq_len=512 "data.batch_size=$((global / n))" data.eval_batch_size=32 task.optimizer.lr=1e-3 \
    task.warmup_steps=50 "trainer.max_steps=$steps" trainer.val_check_interval=100 \
    "paths.record_dir=$PWD/$out/ddp/records" "run_name=ddp-gpus$n" > "$out/logs/ddp-gpus$n.log" 2>&1
  echo "ddp $n GPUs rc=$?"
done
python3 -m experiments.gpt2_wt103.lab.ddp_scaling "$out/ddp/records" --out "$out/ddp"
saved=$PWD/$out/fsdp/converted
python3 -m hedgehog.train experiment=llama_samsum attention=hedgehog seed=0 trainer=fsdp "trainer.devices=$gpus" \
  logger=csv callbacks.progress_bar=null trainer.enable_progress_bar=false "task.save_converted=$saved" \
  "paths.record_dir=$PWD/$out/fsdp/records" run_name=fsdp > "$out/logs/fsdp.log" 2>&1
echo "fsdp rc=$?"
python3 - "$out/fsdp/records/fsdp.json" "$saved" <<'PY'
import json, sys
from hedgehog.data.summarization import load_examples
from hedgehog.generate import generate, load
record = json.load(open(sys.argv[1]))
data, task = record["config"]["data"], record["config"]["task"]
first = record["predictions"][0]
(example,) = [e for e in load_examples(data["dataset"], "test") if e.id == first["id"]]
model, tokenizer = load(sys.argv[2])  # the saved converted model, unsharded, on one device
text = generate(model, tokenizer, data["prompt_template"].format(input=example.input), task["max_new_tokens"], chat=True)
same = text.strip() == first["prediction"]
print(f"FSDP-trained, saved and reloaded unsharded: the same first test summary as the run wrote: {same}")
sys.exit(0 if same else 1)
PY
