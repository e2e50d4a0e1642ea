"""Where a trained MQAR model's accuracy comes from: by which key-value pair a query asks for, by the query's
order in the sequence and by its slot after the pairs, on 3,000 fresh sequences of the run's setting.

    python -m experiments.associative_recall.lab.per_pair_accuracy outputs/associative_recall/runs/<run_name>

Reads the run's record (``record.json`` in the run folder: the composed config) and its best checkpoint.
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hedgehog.data.associative_recall import associative_recall
from hedgehog.data.loading import IGNORE_INDEX


def breakdown(
    model: torch.nn.Module, data: dict, samples: int = 3000, seed: int = 999
) -> dict[str, list[float]]:
    """Accuracy % per pair index, per query order and per slot range after the pairs."""
    p = data["num_pairs"]
    x, y = associative_recall(
        samples,
        data["vocab_size"],
        p,
        data["seq_len"],
        seed=seed,
        query_power_a=data.get("query_power_a", 1.0),
    )
    with torch.no_grad():
        pred = model(x)[0].argmax(-1)
    rows, cols = (y != IGNORE_INDEX).nonzero(as_tuple=True)
    correct = (pred[rows, cols] == y[rows, cols]).float()
    pair = (x[rows, 0 : 2 * p : 2] == x[rows, cols][:, None]).float().argmax(-1)
    order = (cols.view(samples, p).argsort(-1).argsort(-1)).flatten()  # queries come row by row, p per row
    slot = (cols - 2 * p) // 2
    edges = [0, 4, 8, 16, (data["seq_len"] - 2 * p) // 2]
    return {
        "overall": [100 * correct.mean().item()],
        "by pair index": [100 * correct[pair == i].mean().item() for i in range(p)],
        "by query order": [100 * correct[order == i].mean().item() for i in range(p)],
        f"by slot range {edges}": [
            100 * correct[(slot >= a) & (slot < b)].mean().item() for a, b in pairwise(edges) if a < b
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a run folder: record.json and checkpoints/best.ckpt")
    args = parser.parse_args(argv)
    cfg = OmegaConf.create(json.loads((args.run / "record.json").read_text())["config"])
    task = instantiate(cfg.task)
    state = torch.load(args.run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    task.load_state_dict(state["state_dict"])
    for name, values in breakdown(task.model.eval(), OmegaConf.to_container(cfg.data)).items():
        print(f"{name}: " + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
