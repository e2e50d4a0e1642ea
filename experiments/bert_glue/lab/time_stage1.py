"""Time stage 1 (attention distillation) of one embedded conversion, step by step.

    python -m experiments.bert_glue.lab.time_stage1 [--steps 40] [--attention hedgehog] [--task acceptability]

Builds the run's data and model from the config of a Table-1 conversion (``experiment=bert_glue``,
its sizes per scale), starting from the pretrained encoder rather than BERT-FT (the time of a step
does not depend on the weights), then times ``steps`` stage-1 steps:
forward with softmax outputs, ``distillation_losses``, backward, AdamW step. Prints the total,
mean and median wall time per step and the process CPU time (less sensitive to other jobs on a
shared machine); the padded sentence batches of the embedded tasks are what the
key-padding mask of the distillation loss is for.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from hydra.utils import instantiate

from hedgehog.config import compose
from hedgehog.models.conversion import distillation_losses, feature_map_parameters, set_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--attention", default="hedgehog")
    parser.add_argument("--task", default="acceptability")
    parser.add_argument("--scale", default="embedded")
    args = parser.parse_args()

    overrides = [
        "experiment=bert_glue",
        "model.weights=null",
        f"attention={args.attention}",
        f"data.task={args.task}",
        f"scale={args.scale}",
        "seed=0",
    ]
    cfg = compose(overrides)
    torch.manual_seed(0)
    data = instantiate(cfg.data)
    data.setup("fit")
    model = instantiate(cfg.model)(num_labels=data.num_labels)
    model.train()
    set_stage(model, "distill")
    params = list(feature_map_parameters(model).values())
    if not params:
        raise SystemExit(f"attention={args.attention} has no feature-map parameters: stage 1 does not run")
    optimizer = instantiate(cfg.task.distill_optimizer)(params)
    times: list[float] = []
    cpu_times: list[float] = []
    batches = iter(data.train_dataloader())
    for _ in range(args.steps):
        batch = next(batches)
        started, cpu_started = time.perf_counter(), time.process_time()
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = torch.stack(distillation_losses(model, cfg.task.distill_loss)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
    padded = float((batch["attention_mask"] == 0).float().mean())
    print(
        f"stage 1, {args.attention} on {args.task} ({args.scale}), {args.steps} steps of batch "
        f"{batch['input_ids'].shape[0]} x {batch['input_ids'].shape[1]} tokens ({100 * padded:.0f}% padding "
        f"in the last batch), {torch.get_num_threads()} threads: total {sum(times):.2f} s, mean "
        f"{1000 * statistics.mean(times):.0f} ms/step, median {1000 * statistics.median(times):.0f} ms/step, "
        f"CPU time {sum(cpu_times):.2f} s (median {1000 * statistics.median(cpu_times):.0f} ms/step), "
        f"final loss {loss.item():.4f}"
    )


if __name__ == "__main__":
    main()
