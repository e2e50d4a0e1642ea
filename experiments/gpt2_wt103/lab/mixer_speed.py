"""Seconds per training step of each GPT-2 row at the embedded size, on one CPU thread (as a sweep job runs).

The model of ``experiment=gpt2_wt103`` at the embedded scale (4 layers, width 128, 4 heads of 32,
256-token context, batch 8, 4,096-token vocabulary), built from its config with each attention; a step
is forward, next-token loss, backward and AdamW on random tokens, as the training loop runs it. The
first steps (warm-up) are not timed. Whether a row fits the CPU budget of ``make reproduce-gpt2-wt103``
(500 steps, plus validation and test) follows from it: see experiments/gpt2_wt103/lab/mixer_speed.log.

    OMP_NUM_THREADS=1 python -m experiments.gpt2_wt103.lab.mixer_speed softmax hedgehog h3 hyena h3_hybrid
"""

from __future__ import annotations

import argparse
import time

import torch
from hydra.utils import instantiate

from hedgehog.config import compose
from hedgehog.tasks.language_modeling import logits_of, next_token_loss


def seconds_per_step(attention: str, steps: int, warmup: int, overrides: list[str]) -> float:
    """Mean wall seconds of one training step (forward, loss, backward, AdamW) after ``warmup`` steps."""
    cfg = compose(["experiment=gpt2_wt103", f"attention={attention}", *overrides])
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = cfg.data
    ids = torch.randint(0, data.vocab_size, (data.batch_size, data.seq_len + 1))
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        loss = next_token_loss(logits_of(model(input_ids=ids[:, :-1])), ids[:, 1:])[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("attentions", nargs="+")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--override", action="append", default=[], help="extra config overrides")
    args = parser.parse_args(argv)
    print(f"torch threads: {torch.get_num_threads()}")
    for attention in args.attentions:
        seconds = seconds_per_step(attention, args.steps, args.warmup, args.override)
        print(f"{attention:>12}: {seconds:.3f} s/step, 500 steps {500 * seconds / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
