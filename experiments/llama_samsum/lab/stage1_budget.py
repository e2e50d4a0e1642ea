"""How far stage 1 gets on SmolLM2 in the embedded budget: held-out attention KL and the converted model's loss.

    python -m experiments.llama_samsum.lab.stage1_budget --lrs 1e-2 3e-2 --steps 10 --every 5

For each stage-1 learning rate: the experiment's model (conf/experiment/llama_samsum.yaml at the embedded
scale, Hedgehog) distils on the experiment's training batches with the experiment's schedule (AdamW, cosine
over ``--steps``), and after every ``--every`` steps reports, on the first validation batch, the mean over
layers of KL(softmax || linear attention) (the xent loss less the teacher's entropy) and the next-token
loss of the converted model with no LoRA trained (the softmax model's is printed first). CPU seconds are
process time.
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra.utils import instantiate

from hedgehog.config import compose
from hedgehog.models.conversion import (
    distillation_backward,
    distillation_losses,
    feature_map_parameters,
    set_stage,
)
from hedgehog.tasks.language_modeling import causal_lm_inputs, logits_of, next_token_loss
from hedgehog.tasks.optim import warmup_cosine


def held_out(model, batch) -> tuple[float, float]:
    """(mean layer KL of the linear attention to softmax, next-token loss of the converted model) on ``batch``."""
    ids, mask, labels = causal_lm_inputs(batch)
    with torch.no_grad():
        set_stage(model, "distill")
        model(input_ids=ids, attention_mask=mask)
        kl = float(torch.stack(distillation_losses(model, "kl")).mean())
        set_stage(model, "finetune")
        loss = float(next_token_loss(logits_of(model(input_ids=ids, attention_mask=mask)), labels)[0])
    return kl, loss


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-2, 3e-2])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--attention", default="hedgehog")
    args = parser.parse_args(argv)
    cfg = compose(["experiment=llama_samsum", f"attention={args.attention}"])
    data = instantiate(cfg.data)
    data.setup()
    pairs = data.training_pairs("train")
    size = cfg.data.batch_size
    batches = [pairs[torch.arange(i * size, (i + 1) * size)] for i in range(args.steps)]
    val = next(iter(data.val_dataloader()))
    softmax = instantiate(compose(["experiment=llama_samsum", "attention=softmax"]).model)()
    ids, mask, labels = causal_lm_inputs(val)
    with torch.no_grad():
        base = float(next_token_loss(logits_of(softmax(input_ids=ids, attention_mask=mask)), labels)[0])
    print(f"softmax model: held-out next-token loss {base:.3f}", flush=True)
    del softmax
    for lr in args.lrs:
        torch.manual_seed(0)
        model = instantiate(cfg.model)()
        model.eval()  # no dropout in SmolLM2; eval keeps generation-free forwards plain
        kl, loss = held_out(model, val)
        print(f"lr {lr:g} step 0: KL {kl:.3f}, converted loss {loss:.3f}", flush=True)
        optimizer = torch.optim.AdamW(list(feature_map_parameters(model).values()), lr=lr)
        schedule = warmup_cosine(optimizer, args.steps)
        cpu = time.process_time()
        for step, batch in enumerate(batches, start=1):
            set_stage(model, "distill")
            ids, mask, _ = causal_lm_inputs(batch)
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
            optimizer.zero_grad(set_to_none=True)
            distillation_backward(model, cfg.task.distill_loss)
            optimizer.step()
            schedule.step()
            if step % args.every == 0:
                kl, loss = held_out(model, val)
                spent = time.process_time() - cpu
                print(
                    f"lr {lr:g} step {step}: KL {kl:.3f}, converted loss {loss:.3f} ({spent:.0f} CPU s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
