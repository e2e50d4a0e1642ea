"""Can a small classifier learn generated ListOps (512-640 tokens) at a CPU budget? A learnability probe.

Trains hedgehog.models.TransformerClassifier (one torch thread) on the embedded ListOps set and prints
the training accuracy of every 25 steps and the test accuracy at the end. ``--pooling`` reads the
classifier out three ways: ``mean`` (the model's own: the mean over real tokens; routing the root
operator's identity into it needs attention), ``first`` (the first position's state: the root operator
itself, so the root-operator heuristic needs no attention), ``cls`` (LRA's: a learned token prepended,
its state read; routing needs attention again). The root-operator heuristic (the most common label per
root operator, from the training split) scores 33.5% on this test split; the majority class 18.5%.
The logs in probes/ and the commands that made them: probes/README.md.

    PYTHONPATH=src python -m experiments.lra.lab.probe_listops --pooling mean --steps 2000
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from hedgehog.attention import (
    CosFormerFeatureMap,
    Elu1FeatureMap,
    HedgehogFeatureMap,
    LinearAttention,
    PerformerFeatureMap,
    SoftmaxAttention,
)
from hedgehog.data.lra import LRADataModule
from hedgehog.models import TransformerClassifier
from hedgehog.tasks.optim import param_groups, warmup_cosine


def attention(name: str, max_len: int):
    return {
        "softmax": SoftmaxAttention,
        "hedgehog": partial(LinearAttention, feature_map=HedgehogFeatureMap),
        "elu1": partial(LinearAttention, feature_map=Elu1FeatureMap),
        "performer": partial(LinearAttention, feature_map=partial(PerformerFeatureMap, seed=0)),
        "cosformer": partial(LinearAttention, feature_map=partial(CosFormerFeatureMap, max_len=max_len)),
    }[name]


def logits(model: TransformerClassifier, batch: dict[str, Tensor], pooling: str, cls: Tensor) -> Tensor:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if pooling == "mean":
        return model(ids, mask)
    x = model.embed(ids)
    if pooling == "cls":  # LRA's: a learned token first (the last position dropped to keep the length)
        x = torch.cat([cls.expand(len(x), 1, -1), x], dim=1)[:, :-1]
        mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)[:, :-1]
    x = x + model.pos(torch.arange(ids.shape[1]))
    for block in model.blocks:
        x, _ = block(x, key_padding_mask=mask.bool())
    return model.head(model.ln_f(x)[:, 0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attention", default="softmax")
    parser.add_argument("--pooling", default="mean", choices=["mean", "first", "cls"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--min-length", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=640)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    generator = dict(
        num_train=10000, num_val=1000, num_test=1000, min_length=args.min_length,
        max_length=args.max_length, max_depth=10, max_args=10, seed=0,
    )  # fmt: skip
    data = LRADataModule(task="listops", listops_generator=generator, num_test=500)
    data.prepare_data()
    data.setup()
    length = data.max_length
    model = TransformerClassifier(
        data.vocab_size, 10, args.width, args.layers, args.heads, length, attention(args.attention, length)
    )
    cls = torch.nn.Parameter(torch.zeros(1, 1, args.width))
    optimizer = torch.optim.AdamW(param_groups([*model.parameters(), cls], 0.01), args.lr)
    schedule = warmup_cosine(optimizer, args.steps, args.steps // 10)
    train, draws = data.splits["train"], torch.Generator().manual_seed(0)
    started, correct = time.time(), []
    for step in range(args.steps):
        batch = train[torch.randint(len(train), (args.batch,), generator=draws)]
        out = logits(model, batch, args.pooling, cls)
        loss = F.cross_entropy(out, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        correct.append((out.argmax(-1) == batch["labels"]).float().mean().item())
        if (step + 1) % 25 == 0:
            print(
                f"step {step + 1} loss {loss.item():.3f} train acc(last25) {sum(correct[-25:]) / 25:.3f} "
                f"{time.time() - started:.0f}s",
                flush=True,
            )
    model.eval()
    test, right = data.splits["test"], 0
    with torch.no_grad():
        for start in range(0, len(test), 100):
            batch = test[list(range(start, min(start + 100, len(test))))]
            right += (logits(model, batch, args.pooling, cls).argmax(-1) == batch["labels"]).sum().item()
    print("test acc", right / len(test), f"total {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
