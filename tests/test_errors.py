"""Bad input gets a clear error that says what was expected."""

import pytest
import torch

from hedgehog.attention import (
    Elu1FeatureMap,
    HedgehogFeatureMap,
    LinearAttention,
    SoftmaxAttention,
    check_qkv,
    chunked_linear_attention,
)

LAYERS = {
    "linear": lambda: LinearAttention(2, 8, HedgehogFeatureMap),
    "softmax": lambda: SoftmaxAttention(2, 8),
}


@pytest.mark.parametrize("layer", LAYERS)
def test_wrong_rank_names_the_layout(layer):
    q = torch.randn(1, 5, 16)  # (batch, tokens, model dim): heads not split
    with pytest.raises(ValueError, match=r"\(batch, heads, tokens, head_dim\)"):
        LAYERS[layer]()(q, q, q)


@pytest.mark.parametrize("layer", LAYERS)
def test_mismatched_shapes_are_reported(layer):
    q, k = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    v = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="must share"):
        LAYERS[layer]()(q, k, v)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_reported(layer, bad):
    """On CPU the finiteness check raises at once, naming the input."""
    q, k, v = torch.randn(3, 1, 2, 5, 8).unbind(0)
    k[0, 1, 3, 2] = bad
    with pytest.raises(FloatingPointError, match="input k holds NaN or inf"):
        LAYERS[layer]()(q, k, v)


@pytest.mark.gpu
def test_finiteness_check_does_not_stop_the_host_on_cuda():
    """On CUDA the check is a device-side assert, so no host sync per layer (the CPU error is above)."""
    q = torch.randn(1, 2, 5, 8, device="cuda")
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing call raises
    try:
        check_qkv(q, q, q)
        with pytest.raises(RuntimeError, match="synchronizing"):  # the mode does catch the old check
            bool(torch.isfinite(q).all())
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_unknown_causal_form_lists_the_forms():
    with pytest.raises(ValueError, match="chunked"):
        LinearAttention(2, 8, Elu1FeatureMap, causal_form="parallel")


def test_feature_shapes_are_checked():
    fq, fk, v = torch.rand(1, 2, 5, 4), torch.rand(1, 2, 5, 3), torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="same feature dim"):
        chunked_linear_attention(fq, fk, v)
    with pytest.raises(ValueError, match="chunk_size must be positive"):
        chunked_linear_attention(fq, fq, v, chunk_size=0)


def test_bad_feature_map_sizes():
    with pytest.raises(ValueError, match="must be positive"):
        HedgehogFeatureMap(0, 8)
