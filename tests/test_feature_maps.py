"""Feature-map properties: initialisation, positivity, shapes, per-head independence."""

import math

import pytest
import torch

from hedgehog.attention import (
    CosFormerFeatureMap,
    Elu1FeatureMap,
    ExpFeatureMap,
    HedgehogFeatureMap,
    PerformerFeatureMap,
    ReluFeatureMap,
    T2RFeatureMap,
    Taylor2FeatureMap,
    linear_attention_weights,
)

H, D = 3, 8
MAPS = {
    "hedgehog": lambda: HedgehogFeatureMap(H, D),
    "hedgehog_exp": lambda: HedgehogFeatureMap(H, D, activation="exp"),
    "hedgehog_wide": lambda: HedgehogFeatureMap(H, D, feature_dim_half=12),
    "elu1": lambda: Elu1FeatureMap(H, D),
    "relu": lambda: ReluFeatureMap(H, D),
    "exp_t": lambda: ExpFeatureMap(H, D, t=2.0),
    "taylor2": lambda: Taylor2FeatureMap(H, D),
    "t2r": lambda: T2RFeatureMap(H, D, feature_dim=5),
    "performer": lambda: PerformerFeatureMap(H, D, num_features=16, seed=0),
    "cosformer": lambda: CosFormerFeatureMap(H, D, max_len=64),
}


@pytest.mark.parametrize("name", MAPS)
def test_shapes_dtype_and_positivity(name):
    fmap = MAPS[name]()
    q, k = torch.randn(2, 2, H, 20, D, dtype=torch.bfloat16).unbind(0)
    fq, fk = fmap(q, k)
    assert fq.shape == fk.shape == (2, H, 20, fmap.feature_dim)
    assert fq.dtype == torch.float32
    if name == "taylor2":  # its features change sign; the kernel 1 + s + s^2/2 does not
        assert (fq @ fk.transpose(-1, -2) > 0).all()
    else:
        assert (fq >= 0).all() and (fk >= 0).all()
    assert torch.isfinite(fq).all() and torch.isfinite(fk).all()


def test_hedgehog_starts_at_identity_and_untied():
    fmap = HedgehogFeatureMap(H, D)
    eye = torch.eye(D).expand(H, D, D)
    torch.testing.assert_close(fmap.weight_q.data, eye)
    torch.testing.assert_close(fmap.weight_k.data, eye)
    assert (fmap.bias_q == 0).all() and (fmap.bias_k == 0).all()
    assert fmap.weight_q.data_ptr() != fmap.weight_k.data_ptr()
    q = torch.randn(1, H, 5, D)
    fq, _ = fmap(q, q)
    expected = torch.cat([torch.softmax(q, -1), torch.softmax(-q, -1)], -1)
    torch.testing.assert_close(fq, expected)


def test_hedgehog_exp_form_gives_the_papers_weights():
    """The max shift of exp(+-z) cancels for queries: weights equal the unstabilised listing's."""
    fmap = HedgehogFeatureMap(1, D, activation="exp")
    q, k = torch.randn(2, 1, 1, 6, D, dtype=torch.float64).unbind(0)
    fq, fk = fmap(q, k)
    raw_q = torch.cat([q.exp(), (-q).exp()], -1)
    raw_k = torch.cat([k.exp(), (-k).exp()], -1)
    m = k.abs().amax(-1, keepdim=True)  # the per-key shift the stable form applies
    torch.testing.assert_close(
        linear_attention_weights(fq, fk, causal=True, eps=0),
        linear_attention_weights(raw_q, raw_k * torch.exp(-m), causal=True, eps=0),
    )


def test_hedgehog_heads_are_independent():
    fmap = HedgehogFeatureMap(H, D)
    q, k = torch.randn(2, 1, H, 7, D).unbind(0)
    before = fmap(q, k)
    with torch.no_grad():
        fmap.weight_q[1] += torch.randn(D, D)
        fmap.bias_k[1] += torch.randn(D)  # a constant shift would cancel in the softmax
    after = fmap(q, k)
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a[:, [0, 2]], b[:, [0, 2]])
        assert not torch.allclose(a[:, 1], b[:, 1])


def test_hedgehog_rejects_unknown_activation():
    with pytest.raises(ValueError, match="softmax"):
        HedgehogFeatureMap(H, D, activation="tanh")


def test_taylor2_reproduces_second_order_expansion():
    fmap = Taylor2FeatureMap(1, D)
    assert fmap.feature_dim == 1 + D + D * D
    q, k = torch.randn(2, 1, 1, 4, D, dtype=torch.float64).unbind(0)
    fq, fk = fmap(q, k)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    torch.testing.assert_close(fq @ fk.transpose(-1, -2), 1 + s + s**2 / 2)


def test_performer_estimates_softmax_kernel():
    """With many random features, phi(q).phi(k) approaches exp(q.k/sqrt(d)) up to the query's shift."""
    fmap = PerformerFeatureMap(1, D, num_features=20_000, seed=0)
    q, k = (torch.randn(1, 1, 6, D, dtype=torch.float64) * 0.5 for _ in range(2))
    fq, fk = fmap(q, k)
    est = linear_attention_weights(fq, fk, causal=False, eps=0)
    exact = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), dim=-1)
    assert (est - exact).abs().max() < 0.02


def test_performer_redraw():
    fmap = PerformerFeatureMap(1, D, redraw_interval=2, seed=0)
    fmap.train()
    q = torch.randn(1, 1, 3, D)
    first = fmap.omega.clone()
    fmap(q, q)  # call 0 redraws
    drawn = fmap.omega.clone()
    fmap(q, q)  # call 1 keeps
    assert not torch.equal(first, drawn) and torch.equal(drawn, fmap.omega)


def test_cosformer_positions_and_limit():
    fmap = CosFormerFeatureMap(1, D, max_len=10)
    x = torch.randn(1, 1, 10, D)
    whole, _ = fmap(x, x)
    part, _ = fmap(x[..., 4:, :], x[..., 4:, :], offset=4)
    torch.testing.assert_close(whole[..., 4:, :], part)
    with pytest.raises(ValueError, match="max_len"):
        fmap(x, x, offset=1)
    noncausal = CosFormerFeatureMap(1, D)  # M = the length at hand
    assert noncausal(x, x)[0].shape[-1] == 2 * D


def test_exp_t_query_shift_is_exact():
    fmap = ExpFeatureMap(1, D, t=2.0)
    q, k = torch.randn(2, 1, 1, 5, D, dtype=torch.float64).unbind(0)
    fq, fk = fmap(q, k)
    torch.testing.assert_close(
        linear_attention_weights(fq, fk, causal=True, eps=0),
        linear_attention_weights((2 * q).exp(), (2 * k).exp(), causal=True, eps=0),
    )


def test_performer_draws_its_seeded_features_on_the_cpu_under_another_default_device():
    # Lightning builds models under the accelerator's default device; the seeded generator lives on the
    # CPU, so omega must be drawn there (on the H200 the draw under a CUDA default raised)
    expected = PerformerFeatureMap(2, 8, seed=0).omega
    with torch.device("meta"):
        feature_map = PerformerFeatureMap(2, 8, seed=0)
    assert feature_map.omega.device.type == "cpu"
    assert torch.equal(feature_map.omega, expected)
