"""The attention analyses behind the paper's argument, on the real pretrained attention of the encoder.

    python -m experiments.bert_glue.analysis --scale embedded      (make analysis)

1. Runs what is missing through the one entry point (``python -m hedgehog.train``):
   stage-1-only distillations of the pretrained encoder (experiment ``bert_glue_distill``, with
   feature-map snapshots along the way): Hedgehog and T2R-HH on the Table-1 task and Hedgehog on the
   other task, each with 2 seeds; Hedgehog on smaller training sets (seed 0); their sizes, and what
   is measured, come from that experiment's config. Then transfer conversions (experiment
   ``bert_glue_transfer``, records under outputs/): BERT-FT of each task and seed whose
   stage 1 is replaced by the Hedgehog maps distilled (same seed) on either task's text, then
   finetuned (stage 2) as a Table-1 conversion. They need the BERT-FT teachers of
   ``make reproduce-bert-glue``.
2. Measures on held-out text (the val split) with every feature map, before and after distillation:
   KL(softmax || linear) per layer (every seed of the maps that depend on one), attention entropy
   per layer and head, weight against q.k (monotonicity), one sentence's attention maps; writes
   PNGs, analysis.json and summary.md to experiments/bert_glue/tables/<scale>/analysis/.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from hydra.utils import instantiate

from hedgehog.attention import linear_attention_weights
from hedgehog.config import compose, record_dir
from hedgehog.data.text_classification import TextClassificationDataModule
from hedgehog.models.conversion import converted_layers, distillation_losses, set_stage
from hedgehog.models.pretrained import load_tokenizer, sequence_classifier
from hedgehog.paths import output_dir, project_root
from hedgehog.results import (
    DIFFERENCE_RULE,
    attention_label,
    compare_seeds,
    load_records,
    mean_spread,
    published_records,
)

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1)  # distillation (and transfer) seeds; the training-set-size runs use seed 0
# maps whose KL depends on a seed (random features or initialisation, or trained); the rest are fixed
SEEDED = ("performer", "t2r", "t2r_hh", "hedgehog")
# rows: (label, attention config, trained feature maps from a distillation run or None)
UNTRAINED = ("elu1", "relu", "performer", "cosformer", "exp_t", "exp_t2", "taylor2")
# the measured rows: trained maps before (init) and after distillation
LABELS = {name: attention_label(name) for name in UNTRAINED} | {
    "t2r": f"{attention_label('t2r')} (init)",
    "t2r_hh": f"{attention_label('t2r_hh')} (distilled)",
    "hedgehog_init": f"{attention_label('hedgehog')} (init)",
    "hedgehog": f"{attention_label('hedgehog')} (distilled)",
}


@cache
def settings(scale: str) -> dict[str, Any]:
    """The stage-1-only runs' sizes and what the analysis measures, from experiment=bert_glue_distill's config."""
    cfg = compose(["experiment=bert_glue_distill", f"scale={scale}"])
    return {
        "pretrained": cfg.model.pretrained,
        "tasks": tuple(cfg.analysis.tasks),
        "num_train": cfg.data.num_train,
        "train_sizes": tuple(cfg.analysis.train_sizes),
        "snapshots": tuple(cfg.task.feature_map_snapshots),
        "steps": cfg.task.distill_steps,
        "max_length": cfg.data.max_length,
        "held_out": cfg.analysis.held_out,
    }


@cache
def feature_map_file(
    scale: str, attention: str, task: str, num_train: int, seed: int, step: int | None = None
) -> Path:
    """Where the stage-1-only run (experiment=bert_glue_distill) saves these maps (with step: its snapshot)."""
    cfg = compose(
        [
            "experiment=bert_glue_distill",
            f"scale={scale}",
            f"attention={attention}",
            f"data.task={task}",
            f"data.num_train={num_train}",
            f"seed={seed}",
        ]
    )
    path = Path(cfg.task.save_feature_maps)
    return path.with_name(f"{path.stem}-step{step}.pt") if step else path


def train(overrides: list[str]) -> None:
    """Runs through the entry point (a multirun when an override lists values); raises if one fails."""
    quiet = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]
    command = [sys.executable, "-m", "hedgehog.train", "--multirun", *overrides, *quiet]
    print("running:", " ".join(overrides), flush=True)
    subprocess.run(command, cwd=project_root(), check=True)


def distill_runs(scale: str) -> list[tuple[str, str, tuple[int, ...], tuple[int, ...]]]:
    """(attention, task, training-set sizes, seeds) of the stage-1-only runs; one multirun each."""
    s = settings(scale)
    main_task, other_task = s["tasks"]
    smaller = tuple(n for n in s["train_sizes"] if n != s["num_train"])
    return [
        ("hedgehog", main_task, (s["num_train"],), SEEDS),
        ("t2r_hh", main_task, (s["num_train"],), SEEDS),
        ("hedgehog", other_task, (s["num_train"],), SEEDS),
        ("hedgehog", main_task, smaller, (0,)),
    ]


@cache
def transfer_record(scale: str, source: str, target: str, seed: int) -> Path:
    """The record file of one transfer run (experiment=bert_glue_transfer)."""
    cfg = compose(
        [
            "experiment=bert_glue_transfer",
            f"scale={scale}",
            f"transfer_source={source}",
            f"data.task={target}",
            f"seed={seed}",
        ]
    )
    return record_dir(cfg) / f"{cfg.run_name}.json"


def run_missing(scale: str) -> None:
    """The distillation and transfer runs the measurements need, unless their outputs exist."""
    s = settings(scale)
    joined = ",".join
    for attention, task, sizes, seeds in distill_runs(scale):
        if not all(
            feature_map_file(scale, attention, task, n, seed).exists() for n in sizes for seed in seeds
        ):
            train(
                [
                    "experiment=bert_glue_distill",
                    f"scale={scale}",
                    f"attention={attention}",
                    f"data.task={task}",
                    f"data.num_train={joined(map(str, sizes))}",
                    f"seed={joined(map(str, seeds))}",
                ]
            )
    pairs = [(a, b, seed) for a in s["tasks"] for b in s["tasks"] for seed in SEEDS]
    if all(transfer_record(scale, *pair).exists() for pair in pairs):
        return
    train(
        [
            "experiment=bert_glue_transfer",
            f"scale={scale}",
            f"transfer_source={joined(s['tasks'])}",
            f"data.task={joined(s['tasks'])}",
            f"seed={joined(map(str, SEEDS))}",
        ]
    )


def attention_config(name: str, max_len: int, seed: int = 0):
    """The attention constructor of conf/attention/<name>.yaml."""
    cfg = compose([f"attention={name}", f"model.max_len={max_len}", f"seed={seed}"])
    return instantiate(cfg.attention)


def held_out(scale: str, task: str) -> dict[str, torch.Tensor]:
    s = settings(scale)
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
        s = settings(scale)
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
        q, k, _, mask = converted.recorded
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


def probes(scale: str, seed: int = 0) -> dict[str, tuple[str, Path | None]]:
    """Rows of the measurements: name -> (attention config, trained feature maps or None), for one seed.

    Trained rows whose distillation run of this seed is missing are left out."""
    s = settings(scale)
    main_task = s["tasks"][0]
    rows = {name: (name, None) for name in UNTRAINED}
    rows["t2r"] = ("t2r", None)
    rows["hedgehog_init"] = ("hedgehog", None)
    for name in ("t2r_hh", "hedgehog"):
        path = feature_map_file(scale, name, main_task, s["num_train"], seed)
        if path.exists():
            rows[name] = (name, path)
    return rows


def measure(scale: str) -> dict[str, Any]:
    s = settings(scale)
    main_task, other_task = s["tasks"]
    text = {t: held_out(scale, t) for t in s["tasks"]}
    batch = text[main_task]
    results: dict[str, Any] = {"kl_per_layer": {}, "entropy": {}, "monotonicity": {}, "heatmap": {}}
    layer, head = 2, 0
    sentence = 0
    kl_cache: dict[tuple[str, str, str, int], list[float]] = {}

    def kl_per_layer(attention: str, maps: Path | None, task: str, seed: int = 0, probe: Probe | None = None):
        """KL per layer of one map on one task's held-out text (each combination measured once)."""
        key = (attention, str(maps), task, seed)
        if key not in kl_cache:
            kl_cache[key] = (probe or Probe(scale, attention, maps, seed)).kl_per_layer(text[task])
        return kl_cache[key]

    def mean_kl(attention: str, maps: Path | None, task: str, seed: int = 0) -> float:
        return statistics.mean(kl_per_layer(attention, maps, task, seed))

    for name, (attention, maps) in probes(scale).items():
        probe = Probe(scale, attention, maps)
        results["kl_per_layer"][name] = kl_per_layer(attention, maps, main_task, 0, probe)
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

    missing: list[str] = []

    def found(path: Path) -> bool:
        if not path.exists():
            missing.append(str(path.relative_to(project_root())))
        return path.exists()

    # the KL ranking: mean KL over layers per seed, for every map whose KL depends on a seed
    ranking: dict[str, dict[int, float]] = {}
    for seed in SEEDS:
        for name, (attention, maps) in probes(scale, seed).items():
            if seed == 0 or name in SEEDED:
                ranking.setdefault(name, {})[seed] = mean_kl(attention, maps, main_task, seed)
        for name in ("t2r_hh", "hedgehog"):
            found(feature_map_file(scale, name, main_task, s["num_train"], seed))
    results["kl_ranking"] = {name: [by_seed[k] for k in sorted(by_seed)] for name, by_seed in ranking.items()}

    curves: dict[str, Any] = {"steps": {}, "train_size": [], "transfer": {}}
    for attention in ("hedgehog", "t2r_hh"):
        init = "hedgehog" if attention == "hedgehog" else "t2r"
        for seed in SEEDS:
            final = feature_map_file(scale, attention, main_task, s["num_train"], seed)
            if not final.exists():
                continue
            points = [(0, mean_kl(init, None, main_task, seed))]
            for step in s["snapshots"]:
                path = feature_map_file(scale, attention, main_task, s["num_train"], seed, step)
                if found(path):
                    points.append((step, mean_kl(attention, path, main_task, seed)))
            points.append((s["steps"], mean_kl(attention, final, main_task, seed)))
            curves["steps"][f"{attention}-s{seed}"] = points
    for n in s["train_sizes"]:
        path = feature_map_file(scale, "hedgehog", main_task, n, 0)
        if found(path):
            curves["train_size"].append((n, mean_kl("hedgehog", path, main_task)))
    for source in (main_task, other_task):
        for seed in SEEDS:
            path = feature_map_file(scale, "hedgehog", source, s["num_train"], seed)
            if found(path):
                for target in (main_task, other_task):
                    kl = mean_kl("hedgehog", path, target, seed)
                    curves["transfer"].setdefault(f"{source}->{target}", []).append(kl)
    results["curves"] = curves
    transfer_files = [
        transfer_record(scale, a, b, seed) for a in s["tasks"] for b in s["tasks"] for seed in SEEDS
    ]
    transfer_records = load_records([f for f in transfer_files if f.exists()])
    scores: dict[str, list[float]] = {}
    for r in sorted(transfer_records, key=lambda r: r["seed"]):
        source, target = r["config"]["transfer_source"], r["config"]["data"]["task"]
        scores.setdefault(f"{source}->{target}", []).append(r["metrics"]["test/score"])
    for path in transfer_files:
        found(path)
    # the Table-1 / GLUE-table Hedgehog conversions of the same BERT-FT (stage 1 on BERT-FT itself)
    reference: dict[str, list[float]] = {}
    table_dir = published_records("bert_glue", scale)
    for r in sorted(load_records([table_dir]) if table_dir.exists() else [], key=lambda r: r["seed"]):
        if r["attention"] in ("hedgehog", "softmax") and r["seed"] in SEEDS:
            reference.setdefault(f"{r['attention']} {r['config']['data']['task']}", []).append(
                r["metrics"]["test/score"]
            )
    results["transfer_scores"] = {"by_pair": scores, "table_runs": reference}
    results["missing"] = sorted(set(missing))
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
        axes, ("softmax", "hedgehog", "elu1"), ("softmax", LABELS["hedgehog"], LABELS["elu1"]), strict=True
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
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
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
        title="KL vs training-set size (Hedgehog, seed 0)",
    )

    def bars(ax, groups: dict[str, list[float]], color: str) -> None:
        labels = list(groups)
        means = [statistics.mean(v) for v in groups.values()]
        spreads = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in groups.values()]
        ax.bar(range(len(labels)), means, yerr=spreads, capsize=3, color=color)
        for i, values in enumerate(groups.values()):
            ax.plot([i] * len(values), values, "k.", ms=4)
        ax.set_xticks(range(len(labels)), [lbl.replace("->", "\n-> ") for lbl in labels], fontsize=8)

    bars(axes[2], curves["transfer"], "C2")
    axes[2].set(ylabel="mean KL over layers (held-out text of B)", title="Hedgehog distilled on A, KL on B")
    bars(axes[3], results["transfer_scores"]["by_pair"], "C4")
    axes[3].set(ylabel="test score of B after stage 2", title="Maps distilled on A, converted BERT-FT of B")
    fig.tight_layout()
    fig.savefig(out / "kl_curves.png", dpi=120)
    plt.close(fig)


def lower_than(a: list[float], b: list[float], a_fixed: bool, b_fixed: bool) -> str:
    """Whether KL a is established below KL b (``hedgehog.results.DIFFERENCE_RULE``); a map without seed
    dependence has one exact value on this text."""
    if a_fixed and b_fixed:
        return "lower (both without seed dependence)" if a[0] < b[0] else "not lower"
    if a_fixed:  # test b against a's exact value; b higher means a lower
        return compare_seeds(b, a, b_fixed=True).replace("higher", "lower", 1)
    return compare_seeds(a, b, b_fixed=b_fixed)


def with_seeds(vals: list[float], digits: int) -> str:
    """'mean ± spread [seed values]' at ``digits`` decimals."""
    return f"{mean_spread(vals, digits=digits)} [" + ", ".join(f"{v:.{digits}f}" for v in vals) + "]"


def summary(results: dict[str, Any]) -> str:
    """Markdown of the measured numbers: KL ranking, entropy gap to softmax, curves, transfer."""
    softmax_entropy = statistics.mean(v for row in results["entropy"]["softmax"] for v in row)
    ranking = sorted(results["kl_ranking"].items(), key=lambda kv: statistics.mean(kv[1]))
    rows = []
    for i, (n, kls) in enumerate(ranking):
        h = statistics.mean(v for row in results["entropy"][n] for v in row)
        seeds = (
            "no seed dependence"
            if n not in SEEDED
            else ", ".join(f"s{k}: {v:.4f}" for k, v in enumerate(kls))
        )
        versus = ""
        if i + 1 < len(ranking):
            nxt, nxt_kls = ranking[i + 1]
            versus = lower_than(kls, nxt_kls, n not in SEEDED, nxt not in SEEDED)
        rows.append(
            f"| {LABELS[n]} | {mean_spread(kls, digits=4)} | {seeds} | {versus} | {h:.3f} | {h - softmax_entropy:+.3f} |"
        )
    pairs = results["transfer_scores"]["by_pair"]
    kl = results["curves"]["transfer"]
    tasks = sorted({key.split("->")[0] for key in kl})
    crossed = [
        (a, b)
        for a in tasks
        for b in tasks
        if a != b and all(f"{x}->{b}" in kl and f"{x}->{b}" in pairs for x in (a, b))
    ]
    lines = [
        "KL(softmax ‖ linear) on held-out text of the Table-1 task, mean over layers (nats per row); mean ± std "
        "over seeds (n): distillation seeds for trained maps, random-feature / initialisation seeds for "
        "Performer and T2R (init); the other maps do not depend on a seed. 'lower than the next row' applies "
        f"the tables' rule: {DIFFERENCE_RULE}. Entropy: seed 0.",
        "",
        "| feature map | mean KL | per seed | lower than the next row? | mean entropy | entropy − softmax |",
        "|---|---|---|---|---|---|",
        *rows,
        f"| softmax | 0 | | | {softmax_entropy:.3f} | 0 |",
        "",
        "KL vs distillation steps (mean over layers): "
        + "; ".join(
            f"{k}: " + ", ".join(f"{s}→{v:.4f}" for s, v in p) for k, p in results["curves"]["steps"].items()
        ),
        "",
        "KL vs training-set size (Hedgehog, seed 0): "
        + ", ".join(f"{n}→{v:.4f}" for n, v in results["curves"]["train_size"]),
        "",
        "Transfer KL (Hedgehog distilled on → evaluated on; per seed): "
        + "; ".join(f"{k}: {with_seeds(vals, 4)}" for k, vals in results["curves"]["transfer"].items()),
        "",
        "Transfer task score (x100; BERT-FT of the target task and seed, its stage 1 replaced by the Hedgehog "
        "maps distilled on the pretrained encoder with the source task's text and the same seed, then stage 2; "
        "per seed): " + "; ".join(f"{k}: {with_seeds(vals, 1)}" for k, vals in pairs.items()),
        "",
        "Cross-task against in-task maps on the same target, by the tables' rule: "
        + "; ".join(
            f"on {target}, KL of maps from {source}: {compare_seeds(kl[f'{source}->{target}'], kl[f'{target}->{target}'])}"
            f", task score: {compare_seeds(pairs[f'{source}->{target}'], pairs[f'{target}->{target}'])}"
            for source, target in crossed
        ),
        "",
        "For comparison, the Table-1 / GLUE-table runs of the same seeds (stage 1 on BERT-FT itself): "
        + "; ".join(
            f"{k}: {with_seeds(vals, 1)}" for k, vals in results["transfer_scores"]["table_runs"].items()
        ),
        "",
        "Runs not made (their rows and points are left out): " + (", ".join(results["missing"]) or "none"),
    ]
    return "\n".join(lines) + "\n"


def main(scale: str, skip_runs: bool) -> None:
    if not skip_runs:
        run_missing(scale)
    out = HERE / "tables" / scale / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    results = measure(scale)
    scratch = output_dir() / "bert_glue_analysis" / scale
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "measurements.json").write_text(json.dumps(results) + "\n")  # every point, for re-plotting
    (out / "analysis.json").write_text(
        json.dumps(
            results["curves"]
            | {
                "kl_per_layer": results["kl_per_layer"],
                "entropy": results["entropy"],
                "transfer_scores": results["transfer_scores"],
                "kl_ranking": results["kl_ranking"],
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
    parser.add_argument("--scale", default="embedded", choices=["embedded", "paper"])
    parser.add_argument("--skip-runs", action="store_true", help="only measure and plot (the runs exist)")
    args = parser.parse_args()
    main(args.scale, args.skip_runs)
