"""The associative-recall sweep and table path: sweep configs compose, make_table reads records."""

import subprocess
import sys

import pytest
import torch
from omegaconf import open_dict

from experiments.associative_recall import make_table
from hedgehog.attention import HedgehogFeatureMap
from hedgehog.paths import project_root
from hedgehog.train import train

from .pipeline import TINY, compose_config


def test_sweep_configs_compose(tmp_path):
    cfg = compose_config(["experiment=associative_recall", "sweep=associative_recall"], tmp_path)
    # embedded: issue 11's one level, 4 pairs in 32 tokens from a 64-token vocabulary
    assert (cfg.data.num_pairs, cfg.data.seq_len, cfg.data.vocab_size) == (4, 32, 64)
    # paper scale: zoology's MQAR levels, each with the batch size of 1,024 queries per batch
    long = compose_config(
        ["experiment=associative_recall", "scale=paper", "associative_recall.level=t256"], tmp_path
    )
    assert (long.data.num_pairs, long.data.seq_len, long.data.vocab_size) == (16, 256, 8192)
    assert long.data.batch_size * long.data.num_pairs == 1024
    # every map is swept over the same learning rates; make_table keeps each cell's best
    assert "mqar" in cfg.tags
    assert cfg.associative_recall.sweep_lrs == "1e-3,3e-3"


def test_make_table_from_three_tiny_runs(tmp_path):
    records = tmp_path / "records"
    runs = (("softmax", 0, "1e-3"), ("softmax", 0, "3e-3"), ("elu1", 1, "1e-3"), ("performer", 0, "1e-3"))
    for attention, seed, lr in runs:
        cfg = compose_config(
            [
                "experiment=associative_recall",
                "sweep=associative_recall",
                f"attention={attention}",
                f"seed={seed}",
                f"task.optimizer.lr={lr}",
                "trainer.max_steps=2",
                "trainer.val_check_interval=2",
                *TINY,
            ],
            tmp_path / f"{attention}{lr}",
        )
        with open_dict(cfg):
            cfg.paths.record_dir = str(records / "embedded")
            if attention == "performer":  # a run that fails: its record says so, the table names it
                cfg.callbacks.crash = {"_target_": "tests.test_pipeline.Crash", "at_step": 1}
        if attention == "performer":
            with pytest.raises(RuntimeError, match="simulated crash"):
                train(cfg)
        else:
            train(cfg)
    out = tmp_path / "tables"
    make_table.main(["--scale", "embedded", "--records", str(records / "embedded"), "--out", str(out)])
    table = (out / "mqar_accuracy.md").read_text()
    assert "| Softmax | " in table and "| 1 + ELU | " in table
    assert "16 tok / 2 pairs, d=16" in table and "(n=1) @ 0.001 |" in table
    assert "| 100.0 |" in table and "| 17.0 |" in table  # the paper's AR column beside ours
    assert "| Performer | no finished run (1 failed) |" in table
    assert (
        make_table.failure({"error": "AcceleratorError: ... attention input q holds NaN or inf"})
        == "diverged"
    )
    assert (out / "mqar_accuracy.tex").read_text().startswith("\\begin{table}")
    # softmax's cell lists both learning rates' validation accuracy; 1+ELU's only the one it ran
    sweep = (out / "mqar_lr_sweep.md").read_text()
    assert "val acc, lr 0.001" in sweep and "val acc, lr 0.003" in sweep
    assert (out / "accuracy_vs_width.png").stat().st_size > 0
    assert "3 runs" in (out / "timing.md").read_text()  # finished runs only


def test_make_table_without_records_says_what_to_run(tmp_path):
    """As a command, with no records: it fails and names the command that makes them."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.associative_recall.make_table",
            "--records",
            str(tmp_path / "embedded"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=project_root(),
    )
    assert result.returncode != 0 and "make reproduce-ar" in result.stderr


@pytest.mark.parametrize("form", ["softmax", "exp"])
def test_hedgehog_at_identity_init_is_flatter_than_softmax_by_sqrt_d(form):
    """Why Hedgehog trains slowly from scratch: at the identity init, log phi(q).phi(k) rises
    with q.k at about 1/(d T^2), not softmax attention's 1/sqrt(d); T = d^(-1/4) matches it."""
    d = 64
    q, k = 0.16 * torch.randn(1, 1, 256, d), 0.16 * torch.randn(1, 1, 256, d)
    dots = (q @ k.transpose(-1, -2)).flatten()

    def slope(temperature: float | str) -> float:
        with torch.no_grad():
            fq, fk = HedgehogFeatureMap(1, d, activation=form, temperature=temperature)(q, k)
        log_kernel = (fq @ fk.transpose(-1, -2)).log().flatten()
        return float(torch.cov(torch.stack([dots, log_kernel]))[0, 1] / dots.var())

    assert 0.7 / d < slope(1.0) < 1.3 / d
    assert slope("auto") == pytest.approx(d**-0.5, rel=0.15)


def test_hedgehog_auto_temperature_is_head_dim_to_the_minus_quarter():
    assert HedgehogFeatureMap(2, 16, temperature="auto").temperature == pytest.approx(0.5)
    assert HedgehogFeatureMap(2, 16).temperature == 1.0  # the paper's setting stays the default
    with pytest.raises(ValueError, match="'auto'"):
        HedgehogFeatureMap(2, 16, temperature="sharp")


def test_per_pair_breakdown_splits_the_overall_accuracy():
    """lab/per_pair_accuracy.py: per pair index, query order and slot range, each weighted by its queries,
    gives back the overall accuracy (4 pairs: every pair and order holds a quarter of the queries)."""
    from functools import partial

    from experiments.associative_recall.lab.per_pair_accuracy import breakdown
    from hedgehog.attention import SoftmaxAttention
    from hedgehog.models import TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(64, 16, 1, 2, 32, partial(SoftmaxAttention)).eval()
    data = {"num_pairs": 4, "vocab_size": 64, "seq_len": 32}
    parts = breakdown(model, data, samples=200)
    overall = parts["overall"][0]
    assert len(parts["by pair index"]) == len(parts["by query order"]) == 4
    assert sum(parts["by pair index"]) / 4 == pytest.approx(overall)
    assert sum(parts["by query order"]) / 4 == pytest.approx(overall)
