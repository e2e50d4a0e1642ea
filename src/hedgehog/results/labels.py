"""The one map from an attention config's name (conf/attention/<name>.yaml) to its label in tables and figures."""

from __future__ import annotations

ATTENTION_LABELS: dict[str, str] = {
    "softmax": "Softmax",
    "hedgehog": "Hedgehog",
    "hedgehog_auto": "Hedgehog (T = d^-1/4; deviation)",
    "hedgehog_exp": "Hedgehog (exp activation)",
    "hedgehog_window": "Hedgehog + sliding window (LoLCATs)",
    "taylor2": "Taylor-2",
    "elu1": "1 + ELU",
    "relu": "ReLU",
    "performer": "Performer",
    "cosformer": "cosFormer",
    "exp_t": "exp(t = 1)",
    "exp_t2": "exp(t = 2)",
    "t2r": "T2R",
    "t2r_hh": "T2R-HH",
    "h3": "H3",
    "hyena": "Hyena",
    "h3_hybrid": "Hybrid H3",
}
# the attention names whose published row in experiments/paper_results.yaml has another key
PAPER_KEYS = {"exp_t": "exp_t1", "h3_hybrid": "hybrid_h3"}


def attention_label(name: str) -> str:
    """The display label of an attention config (its name when it has none)."""
    return ATTENTION_LABELS.get(name, name)


def paper_key(name: str) -> str:
    """The key of an attention's published row in experiments/paper_results.yaml."""
    return PAPER_KEYS.get(name, name)
