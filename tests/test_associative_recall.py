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
    assert "difficulty_sweep" in cfg.tags
    # embedded: issue 11's one level, 4 pairs in 32 tokens from a 64-token vocabulary
    assert (cfg.data.num_pairs, cfg.data.seq_len, cfg.data.vocab_size) == (4, 32, 64)
    # paper scale: zoology's MQAR levels, each with the batch size of 1,024 queries per batch
    long = compose_config(
        ["experiment=associative_recall", "scale=paper", "associative_recall.level=t256"], tmp_path
    )
    assert (long.data.num_pairs, long.data.seq_len, long.data.vocab_size) == (16, 256, 8192)
    assert long.data.batch_size * long.data.num_pairs == 1024
    # the per-map learning rate falls back on the default for maps the tuning did not set
    assert cfg.task.optimizer.lr == cfg.associative_recall.lr.get(
        cfg.attention_name, cfg.associative_recall.lr.default
    )
    tuning = compose_config(["experiment=associative_recall", "sweep=associative_recall_lr"], tmp_path)
    assert "lr_tuning" in tuning.tags and tuning.run_name.startswith("lrtune-")


def test_make_table_from_two_tiny_runs(tmp_path):
    records = tmp_path / "records"
    for attention, seed in (("softmax", 0), ("elu1", 1)):
        cfg = compose_config(
            [
                "experiment=associative_recall",
                "sweep=associative_recall",
                f"attention={attention}",
                f"seed={seed}",
                "trainer.max_steps=2",
                "trainer.val_check_interval=2",
                *TINY,
            ],
            tmp_path / attention,
        )
        with open_dict(cfg):
            cfg.paths.record_dir = str(records / "embedded")
        train(cfg)
    out = tmp_path / "tables"
    make_table.main(["--scale", "embedded", "--records", str(records), "--out", str(out)])
    table = (out / "accuracy.md").read_text()
    assert "| Softmax | " in table and "| 1 + ELU | " in table
    assert "d=16, 2 pairs / 16 tok" in table and "(n=1)" in table
    assert "| 100.0 |" in table and "| 17.0 |" in table  # the paper's AR column beside ours
    assert (out / "accuracy.tex").read_text().startswith("\\begin{table}")
    assert (out / "accuracy_vs_difficulty.png").stat().st_size > 0
    assert "2 runs" in (out / "timing.md").read_text()


def test_make_table_without_records_says_what_to_run(tmp_path):
    """As a command, with no records: it fails and names the command that makes them."""
    result = subprocess.run(
        [sys.executable, "-m", "experiments.associative_recall.make_table", "--records", str(tmp_path)],
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
