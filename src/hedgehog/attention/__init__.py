"""Hedgehog and baseline linear attentions: feature maps, the three causal forms, the sliding-window hybrid,
distillation."""

from hedgehog.attention.distillation import attention_distillation_loss, softmax_attention_weights
from hedgehog.attention.feature_maps import (
    CosFormerFeatureMap,
    Elu1FeatureMap,
    ExpFeatureMap,
    FeatureMap,
    HedgehogFeatureMap,
    PerformerFeatureMap,
    ReluFeatureMap,
    T2RFeatureMap,
    Taylor2FeatureMap,
)
from hedgehog.attention.layer import (
    KVCache,
    LinearAttention,
    SlidingWindowLinearAttention,
    SoftmaxAttention,
    build_attention,
    check_qkv,
)
from hedgehog.attention.linear_attention import (
    LinearAttentionState,
    chunked_linear_attention,
    linear_attention_weights,
    noncausal_linear_attention,
    quadratic_linear_attention,
    recurrent_linear_attention,
)
from hedgehog.attention.window import (
    WindowAttentionState,
    chunked_window_attention,
    quadratic_window_attention,
    recurrent_window_attention,
    window_attention_state,
    window_attention_weights,
    window_state_after,
)

__all__ = [
    "CosFormerFeatureMap",
    "Elu1FeatureMap",
    "ExpFeatureMap",
    "FeatureMap",
    "HedgehogFeatureMap",
    "KVCache",
    "LinearAttention",
    "LinearAttentionState",
    "PerformerFeatureMap",
    "ReluFeatureMap",
    "SlidingWindowLinearAttention",
    "SoftmaxAttention",
    "T2RFeatureMap",
    "Taylor2FeatureMap",
    "WindowAttentionState",
    "attention_distillation_loss",
    "build_attention",
    "check_qkv",
    "chunked_linear_attention",
    "chunked_window_attention",
    "linear_attention_weights",
    "noncausal_linear_attention",
    "quadratic_linear_attention",
    "quadratic_window_attention",
    "recurrent_linear_attention",
    "recurrent_window_attention",
    "softmax_attention_weights",
    "window_attention_state",
    "window_attention_weights",
    "window_state_after",
]
