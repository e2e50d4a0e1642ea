"""Hedgehog and baseline linear attentions: feature maps, the three causal forms, distillation."""

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
from hedgehog.attention.layer import KVCache, LinearAttention, SoftmaxAttention, check_qkv
from hedgehog.attention.linear_attention import (
    LinearAttentionState,
    chunked_linear_attention,
    linear_attention_weights,
    noncausal_linear_attention,
    quadratic_linear_attention,
    recurrent_linear_attention,
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
    "SoftmaxAttention",
    "T2RFeatureMap",
    "Taylor2FeatureMap",
    "attention_distillation_loss",
    "check_qkv",
    "chunked_linear_attention",
    "linear_attention_weights",
    "noncausal_linear_attention",
    "quadratic_linear_attention",
    "recurrent_linear_attention",
    "softmax_attention_weights",
]
