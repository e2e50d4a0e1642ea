"""The attention analyses behind the paper's argument, on the real pretrained attention of the encoder.

    python experiments/bert_glue/analysis.py --scale embedded      (make analysis)

1. Runs what is missing through the one entry point (``python -m hedgehog.train``):
   stage-1-only distillations of the pretrained encoder (experiment ``bert_glue_distill``, with
   feature-map snapshots along the way): Hedgehog on the Table-1 task (2 seeds) and on the other
   task, T2R-HH, Hedgehog on a small training set; and transfer conversions of BERT-FT on the
   Table-1 task whose stage 1 is replaced by Hedgehog maps distilled on the other task's text or on
   its own (records under experiments/bert_glue_transfer). Runs beyond the KL ranking use seed 0
   (the CPU budget); they are reported, not used to claim differences.
   The transfer conversions need the BERT-FT teachers of ``make reproduce-bert-glue``.
2. Measures on held-out text (the val split) with every feature map, before and after distillation:
   KL(softmax || linear) per layer, attention entropy per layer and head, weight against q.k
   (monotonicity), and one sentence's attention maps; writes PNGs and analysis.json to
   experiments/bert_glue/analysis/<scale>/.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from hedgehog.attention import linear_attention_weights
from hedgehog.data.text_classification import TextClassificationDataModule
from hedgehog.models.conversion import converted_layers, distillation_losses, set_stage
from hedgehog.models.pretrained import load_tokenizer, sequence_classifier
from hedgehog.results import load_records
from hedgehog.train import CONF_DIR, register_resolvers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SETTINGS = {
    "embedded": {
        "pretrained": "all-MiniLM-L6-v2",
        "tasks": ("acceptability", "bbc_topic"),
        "num_train": 1024,
        "small_train": 16,
        "snapshots": (10, 30),
        "steps": 60,
        "max_length": 32,
        "held_out": 128,
    },
    "paper": {
        "pretrained": "bert-base-uncased",
        "tasks": ("cola", "sst2"),
        "num_train": 32000,
        "small_train": 1000,
        "snapshots": (100, 300),
        "steps": 1000,
        "max_length": 128,
        "held_out": 1000,
    },
}
SEEDS = (0, 1)  # Hedgehog on the Table-1 task, whose KL the ranking compares; other runs use seed 0
# rows: (label, attention config, trained feature maps from a distillation run or None)
UNTRAINED = ("elu1", "relu", "performer", "cosformer", "exp_t", "exp_t2", "taylor2")
LABELS = {
    "elu1": "1+ELU",
    "relu": "ReLU",
    "performer": "Performer",
    "cosformer": "cosFormer",
    "exp_t": "exp(t=1)",
    "exp_t2": "exp(t=2)",
    "taylor2": "Taylor-2",
    "t2r": "T2R (init)",
    "t2r_hh": "T2R-HH (distilled)",
    "hedgehog_init": "Hedgehog (init)",
    "hedgehog": "Hedgehog (distilled)",
}


def feature_map_file(
    scale: str, attention: str, task: str, num_train: int, seed: int, step: int | None = None
) -> Path:
    stem = f"{attention}-{task}-n{num_train}-s{seed}"
    name = f"{stem}-step{step}.pt" if step else f"{stem}.pt"
    return ROOT / "outputs" / "bert_glue_distill" / "feature_maps" / scale / name


def train(overrides: list[str]) -> None:
    """Runs through the entry point (a multirun when an override lists values); raises if one fails."""
    quiet = ["~callbacks.progress_bar", "trainer.enable_progress_bar=false"]
    command = [sys.executable, "-m", "hedgehog.train", "--multirun", *overrides, *quiet]
    print("running:", " ".join(overrides), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def distill_runs(scale: str) -> list[tuple[str, str, int, tuple[int, ...]]]:
    """(attention, task, training examples, seeds) of the stage-1-only runs."""
    s = SETTINGS[scale]
    main_task, other_task = s["tasks"]
    return [
        ("hedgehog", main_task, s["num_train"], SEEDS),
        ("hedgehog", other_task, s["num_train"], (0,)),
        ("t2r_hh", main_task, s["num_train"], (0,)),
        ("hedgehog", main_task, s["small_train"], (0,)),
    ]


def run_missing(scale: str) -> None:
    """The distillation and transfer runs the measurements need, unless their outputs exist."""
    s = SETTINGS[scale]
    main_task = s["tasks"][0]
    for attention, task, n, seeds in distill_runs(scale):
        if not all(feature_map_file(scale, attention, task, n, seed).exists() for seed in seeds):
            train(
                [
                    "experiment=bert_glue_distill",
                    f"scale={scale}",
                    f"attention={attention}",
                    f"data.task={task}",
                    f"data.num_train={n}",
                    f"seed={','.join(map(str, seeds))}",
                ]
            )
    transfer_dir = ROOT / "experiments" / "bert_glue_transfer" / "records" / scale
    for source in s["tasks"]:
        run_name = f"hedgehog-maps_from_{source}-{main_task}-s0"
        if (transfer_dir / f"{run_name}.json").exists():
            continue
        train(
            [
                "experiment=bert_glue",
                f"scale={scale}",
                "attention=hedgehog",
                f"data.task={main_task}",
                "seed=0",
                f"model.feature_maps={feature_map_file(scale, 'hedgehog', source, s['num_train'], 0)}",
                "task.distill_steps=0",
                "experiment_name=bert_glue_transfer",
                f"run_name={run_name}",
            ]
        )


def attention_config(name: str, max_len: int, seed: int = 0):
    """The attention constructor of conf/attention/<name>.yaml."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"attention={name}", f"model.max_len={max_len}", f"seed={seed}"])
    return instantiate(cfg.attention)


def held_out(scale: str, task: str) -> dict[str, torch.Tensor]:
    s = SETTINGS[scale]
    data = TextClassificationDataModule(
        task,
        load_tokenizer(s["pretrained"]),
        max_length=s["max_length"],
        num_train=1,
        num_val=s["held_out"],
        num_test=1,
    )
    data.setup()
    return data.splits["val"].encoded


class Probe:
    """The pretrained encoder converted with one feature map, run with softmax outputs (the teacher's q, k)."""

    def __init__(self, scale: str, attention: str, maps: Path | None, seed: int = 0) -> None:
        s = SETTINGS[scale]
        torch.manual_seed(seed)  # the initial T2R map is random
        self.model = sequence_classifier(
            s["pretrained"], 2, attention_config(attention, s["max_length"], seed), feature_maps=maps
        ).eval()
        set_stage(self.model, "distill")

    @torch.no_grad()
    def run(self, batch: dict[str, torch.Tensor]) -> None:
        self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    @torch.no_grad()
    def kl_per_layer(self, batch: dict[str, torch.Tensor]) -> list[float]:
        self.run(batch)
        return [float(x) for x in distillation_losses(self.model, loss="kl")]

    @torch.no_grad()
    def weights(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(softmax weights, linear weights, q.k/sqrt(d), key mask) of one layer from the last run."""
        converted = converted_layers(self.model)[layer]
        q, k, mask = converted.recorded
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        keys = mask[:, None, None, :]
        teacher = torch.softmax(logits.masked_fill(~keys, float("-inf")), dim=-1)
        if converted.is_linear:
            fq, fk = converted.attention.features(q, k)
            student = linear_attention_weights(fq, fk * mask[:, None, :, None].to(fk.dtype), causal=False)
        else:
            student = teacher
        return teacher, student, logits, mask


def entropy(weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean row entropy per head (H,) over real query rows."""
    rows = -(weights * torch.log(weights.clamp_min(1e-30))).sum(-1)  # (B, H, T)
    real = mask[:, None, :].to(rows.dtype)
    return (rows * real).sum((0, 2)) / real.sum((0, 2))


def probes(scale: str) -> dict[str, tuple[str, Path | None]]:
    s = SETTINGS[scale]
    main_task = s["tasks"][0]
    rows = {name: (name, None) for name in UNTRAINED}
    rows["t2r"] = ("t2r", None)
    for name, attention in (("t2r_hh", "t2r_hh"), ("hedgehog_init", "hedgehog"), ("hedgehog", "hedgehog")):
        if name == "hedgehog_init":
            rows[name] = (attention, None)
            continue
        path = feature_map_file(scale, attention, main_task, s["num_train"], 0)
        if path.exists():
            rows[name] = (attention, path)
    return rows


def measure(scale: str) -> dict[str, Any]:
    s = SETTINGS[scale]
    main_task, other_task = s["tasks"]
    text = {t: held_out(scale, t) for t in s["tasks"]}
    batch = text[main_task]
    results: dict[str, Any] = {"kl_per_layer": {}, "entropy": {}, "monotonicity": {}, "heatmap": {}}
    layer, head = 2, 0
    sentence = 0
    for name, (attention, maps) in probes(scale).items():
        probe = Probe(scale, attention, maps)
        results["kl_per_layer"][name] = probe.kl_per_layer(batch)
        entropies = []
        for i in range(len(converted_layers(probe.model))):
            teacher, student, logits, mask = probe.weights(i)
            entropies.append(entropy(student, mask).tolist())
            if "softmax" not in results["entropy"] or len(results["entropy"]["softmax"]) <= i:
                results["entropy"].setdefault("softmax", []).append(entropy(teacher, mask).tolist())
            if i == layer:
                real = mask[:, None, :, None] & mask[:, None, None, :]
                picked = real[:, 0].expand_as(logits[:, head])
                results["monotonicity"][name] = {
                    "qk": logits[:, head][picked][:4000].tolist(),
                    "weight": student[:, head][picked][:4000].tolist(),
                    "softmax": teacher[:, head][picked][:4000].tolist(),
                }
                n = int(mask[sentence].sum())
                results["heatmap"][name] = student[sentence, head, :n, :n].tolist()
                results["heatmap"]["softmax"] = teacher[sentence, head, :n, :n].tolist()
                tokens = load_tokenizer(s["pretrained"]).convert_ids_to_tokens(
                    batch["input_ids"][sentence, :n]
                )
                results["heatmap_tokens"] = tokens
        results["entropy"][name] = entropies
    results["heatmap_layer_head"] = [layer, head]

    def mean_kl(attention: str, maps: Path | None, task: str, seed: int = 0) -> float:
        return statistics.mean(Probe(scale, attention, maps, seed).kl_per_layer(text[task]))

    curves: dict[str, Any] = {"steps": {}, "train_size": [], "transfer": {}, "seeds": {}}
    missing: list[str] = []

    def found(path: Path) -> bool:
        if not path.exists():
            missing.append(str(path.relative_to(ROOT)))
        return path.exists()

    for attention, seeds in (("hedgehog", SEEDS), ("t2r_hh", (0,))):
        init = "hedgehog" if attention == "hedgehog" else "t2r"
        for seed in seeds:
            final = feature_map_file(scale, attention, main_task, s["num_train"], seed)
            if not found(final):
                continue
            points = [(0, mean_kl(init, None, main_task, seed))]
            for step in s["snapshots"]:
                path = feature_map_file(scale, attention, main_task, s["num_train"], seed, step)
                points.append((step, mean_kl(attention, path, main_task, seed)))
            points.append((s["steps"], mean_kl(attention, final, main_task, seed)))
            curves["steps"][f"{attention}-s{seed}"] = points
    for n in (s["small_train"], s["num_train"]):
        path = feature_map_file(scale, "hedgehog", main_task, n, 0)
        if found(path):
            curves["train_size"].append((n, mean_kl("hedgehog", path, main_task)))
    for source in (main_task, other_task):
        path = feature_map_file(scale, "hedgehog", source, s["num_train"], 0)
        if found(path):
            for target in (main_task, other_task):
                curves["transfer"][f"{source}->{target}"] = [mean_kl("hedgehog", path, target)]
    results["missing"] = sorted(set(missing))
    # Performer's random features are the only untrained map that depends on the seed
    curves["seeds"]["performer"] = [mean_kl("performer", None, main_task, seed) for seed in SEEDS]
    results["curves"] = curves
    transfer_dir = ROOT / "experiments" / "bert_glue_transfer" / "records" / scale
    transfer_records = load_records([transfer_dir]) if transfer_dir.exists() else []
    scores: dict[str, list[float]] = {}
    for r in transfer_records:
        source = r["run_name"].split("maps_from_")[1].split("-")[0]
        scores.setdefault(source, []).append(r["metrics"]["test/score"])
    results["transfer_scores"] = {"task": main_task, "by_source": scores}
    return results


def figures(results: dict[str, Any], out: Path) -> None:
    names = list(results["kl_per_layer"])
    colors = {n: plt.cm.tab20(i / max(len(names), 1)) for i, n in enumerate(names)}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in names:
        ax.plot(
            range(1, len(results["kl_per_layer"][n]) + 1),
            results["kl_per_layer"][n],
            "o-",
            label=LABELS[n],
            color=colors[n],
        )
    ax.set(
        yscale="log",
        xlabel="layer",
        ylabel="KL(softmax || linear), nats per row",
        title="Fidelity per layer (held-out text)",
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "kl_per_layer.png", dpi=120)
    plt.close(fig)

    panels = ["softmax", *names]
    cols = 4
    fig, axes = plt.subplots(
        math.ceil(len(panels) / cols), cols, figsize=(13, 2.1 * math.ceil(len(panels) / cols))
    )
    vmax = max(max(max(row) for row in results["entropy"][n]) for n in panels)
    for ax, n in zip(axes.flat, panels, strict=False):
        grid = results["entropy"][n]
        image = ax.imshow(grid, vmin=0, vmax=vmax, cmap="viridis", aspect="auto")
        mean = statistics.mean(v for row in grid for v in row)
        ax.set_title(f"{LABELS.get(n, 'softmax')}: mean {mean:.2f}", fontsize=8)
        ax.set(xlabel="head", ylabel="layer")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.6, label="row entropy (nats)")
    fig.savefig(out / "entropy.png", dpi=110)
    plt.close(fig)

    mono = results["monotonicity"]
    fig, axes = plt.subplots(3, 4, figsize=(13, 8.5))
    layer, head = results["heatmap_layer_head"]
    first = next(iter(mono.values()))
    axes.flat[0].scatter(first["qk"], first["softmax"], s=2, alpha=0.3, color="black")
    axes.flat[0].set_title("softmax", fontsize=9)
    for ax, n in zip(list(axes.flat)[1:], names, strict=False):
        ax.scatter(mono[n]["qk"], mono[n]["weight"], s=2, alpha=0.3, color=colors[n])
        ax.set_title(LABELS[n], fontsize=9)
    for ax in axes.flat:
        ax.set(xlabel="q.k / sqrt(d)", ylabel="weight")
    fig.suptitle(
        f"Monotonicity: attention weight against q.k (layer {layer + 1}, head {head + 1}, held-out text)"
    )
    fig.tight_layout()
    fig.savefig(out / "monotonicity.png", dpi=110)
    plt.close(fig)

    tokens = results["heatmap_tokens"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, n, title in zip(
        axes, ("softmax", "hedgehog", "elu1"), ("softmax", "Hedgehog (distilled)", "1+ELU"), strict=True
    ):
        ax.imshow(results["heatmap"][n], cmap="magma")
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
        ax.set_title(title)
    fig.suptitle(f"Attention of one held-out sentence (layer {layer + 1}, head {head + 1})")
    fig.tight_layout()
    fig.savefig(out / "heatmaps.png", dpi=120)
    plt.close(fig)

    curves = results["curves"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, points in curves["steps"].items():
        steps, values = zip(*points, strict=True)
        axes[0].plot(steps, values, "o-", label=key)
    axes[0].set(
        xscale="symlog",
        yscale="log",
        xlabel="distillation steps",
        ylabel="mean KL over layers",
        title="KL vs distillation steps",
    )
    axes[0].legend(fontsize=8)
    if curves["train_size"]:
        sizes, values = zip(*curves["train_size"], strict=True)
        axes[1].plot(sizes, values, "o-", color="C3")
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="distillation training examples",
        ylabel="mean KL over layers",
        title="KL vs training-set size (Hedgehog)",
    )
    labels = list(curves["transfer"])
    axes[2].bar(range(len(labels)), [statistics.mean(v) for v in curves["transfer"].values()], color="C2")
    axes[2].set_xticks(range(len(labels)), [lbl.replace("->", "\n-> ") for lbl in labels], fontsize=8)
    axes[2].set(ylabel="mean KL over layers", title="Hedgehog distilled on A, evaluated on B")
    fig.tight_layout()
    fig.savefig(out / "kl_curves.png", dpi=120)
    plt.close(fig)


def summary(results: dict[str, Any]) -> str:
    """Markdown of the measured numbers: KL ranking, entropy gap to softmax, curves, transfer."""
    softmax_entropy = statistics.mean(v for row in results["entropy"]["softmax"] for v in row)
    rows = []
    for n, kl in sorted(results["kl_per_layer"].items(), key=lambda kv: statistics.mean(kv[1])):
        h = statistics.mean(v for row in results["entropy"][n] for v in row)
        rows.append(f"| {LABELS[n]} | {statistics.mean(kl):.4f} | {h:.3f} | {h - softmax_entropy:+.3f} |")
    lines = [
        "| feature map | mean KL(softmax ‖ linear) | mean entropy | entropy − softmax |",
        "|---|---|---|---|",
        *rows,
        f"| softmax | 0 | {softmax_entropy:.3f} | 0 |",
        "",
        "KL vs distillation steps (mean over layers): "
        + "; ".join(
            f"{k}: " + ", ".join(f"{s}→{v:.4f}" for s, v in p) for k, p in results["curves"]["steps"].items()
        ),
        "",
        "KL vs training-set size (Hedgehog, seed 0): "
        + ", ".join(f"{n}→{v:.4f}" for n, v in results["curves"]["train_size"]),
        "",
        "Transfer KL (Hedgehog distilled on → evaluated on, seed 0): "
        + "; ".join(
            f"{k}: " + ", ".join(f"{v:.4f}" for v in vals)
            for k, vals in results["curves"]["transfer"].items()
        ),
        "",
        "Performer's KL with the random features of seeds 0 and 1: "
        + "; ".join(
            f"{k}: " + ", ".join(f"{v:.4f}" for v in vals) for k, vals in results["curves"]["seeds"].items()
        ),
        "",
        "Runs not made (their rows and points are left out): " + (", ".join(results["missing"]) or "none"),
        "",
        f"Transfer task score on {results['transfer_scores']['task']} (Hedgehog maps distilled from the pretrained "
        "encoder on the named task's text, then stage 2): "
        + "; ".join(
            f"from {k}: " + ", ".join(f"{v:.1f}" for v in vals)
            for k, vals in results["transfer_scores"]["by_source"].items()
        ),
    ]
    return "\n".join(lines) + "\n"


def main(scale: str, skip_runs: bool) -> None:
    if not skip_runs:
        run_missing(scale)
    out = HERE / "analysis" / scale
    out.mkdir(parents=True, exist_ok=True)
    results = measure(scale)
    scratch = ROOT / "outputs" / "bert_glue_analysis" / scale
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "measurements.json").write_text(json.dumps(results) + "\n")  # every point, for re-plotting
    (out / "analysis.json").write_text(
        json.dumps(
            results["curves"]
            | {
                "kl_per_layer": results["kl_per_layer"],
                "entropy": results["entropy"],
                "transfer_scores": results["transfer_scores"],
            },
            indent=1,
        )
        + "\n"
    )
    figures(results, out)
    text = summary(results)
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="embedded", choices=sorted(SETTINGS))
    parser.add_argument("--skip-runs", action="store_true", help="only measure and plot (the runs exist)")
    args = parser.parse_args()
    main(args.scale, args.skip_runs)
