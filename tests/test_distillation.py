"""The distillation loss equals a direct computation, is chunk-invariant, and is flat at a perfect student."""

import math

import pytest
import torch

from hedgehog.attention import HedgehogFeatureMap, attention_distillation_loss, softmax_attention_weights


def direct_xent(q, k, fq, fk, causal):
    t = q.shape[-2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    lin = fq @ fk.transpose(-1, -2)
    if causal:
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
        lin = lin.masked_fill(~mask, 0)
    a = scores.softmax(-1)
    a_hat = lin / lin.sum(-1, keepdim=True)
    terms = torch.where(a > 0, -a * a_hat.log(), torch.zeros_like(a))
    return terms.sum(-1).mean()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("chunk", [4, 7, 64])
def test_matches_direct_computation(causal, chunk):
    q, k = torch.randn(2, 2, 3, 19, 8, dtype=torch.float64).unbind(0)
    fmap = HedgehogFeatureMap(3, 8).double()
    fq, fk = fmap(q, k)
    loss = attention_distillation_loss(q, k, fq, fk, causal, query_chunk=chunk, eps=0.0)
    torch.testing.assert_close(loss, direct_xent(q, k, fq, fk, causal))


def test_chunked_gradients_equal_unchunked():
    q, k = torch.randn(2, 1, 2, 23, 8, dtype=torch.float64).unbind(0)
    fmap = HedgehogFeatureMap(2, 8).double()
    grads = []
    for chunk in (5, 64):
        fmap.zero_grad()
        attention_distillation_loss(q, k, *fmap(q, k), causal=True, query_chunk=chunk).backward()
        grads.append(fmap.weight_q.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_perfect_student_has_zero_gradient_and_kl():
    """Keys c*e_j and phi_q(q) = exp(c q / sqrt(d)), phi_k(k) = k / c reproduce softmax exactly."""
    d, c = 6, 2.0
    q = torch.randn(1, 1, d, d, dtype=torch.float64)
    k = c * torch.eye(d, dtype=torch.float64).expand(1, 1, d, d)
    fq = torch.exp(c * q / math.sqrt(d)).requires_grad_()
    fk = (k / c).clone().requires_grad_()
    xent = attention_distillation_loss(q, k, fq, fk, causal=True, loss="xent", eps=0.0)
    kl = attention_distillation_loss(q, k, fq, fk, causal=True, loss="kl", eps=0.0)
    teacher = softmax_attention_weights(q, k, causal=True)
    entropy = -(teacher * teacher.clamp_min(1e-300).log()).sum(-1).mean()
    torch.testing.assert_close(xent, entropy)
    assert abs(kl.item()) < 1e-12
    g_q, g_k = torch.autograd.grad(xent, (fq, fk))
    assert g_q.abs().max() < 1e-12 and g_k.abs().max() < 1e-12


def test_imperfect_student_has_gradient_and_positive_kl():
    q, k = torch.randn(2, 1, 2, 12, 8).unbind(0)
    fmap = HedgehogFeatureMap(2, 8)
    kl = attention_distillation_loss(q, k, *fmap(q, k), causal=True, loss="kl")
    kl.backward()
    assert kl.item() > 0
    assert fmap.weight_q.grad.abs().sum() > 0 and fmap.weight_k.grad.abs().sum() > 0


def test_output_mse_loss():
    q, k, v = torch.randn(3, 1, 2, 12, 8).unbind(0)
    fmap = HedgehogFeatureMap(2, 8)
    loss = attention_distillation_loss(q, k, *fmap(q, k), causal=True, loss="mse", v=v)
    assert loss.item() > 0
    with pytest.raises(ValueError, match="values"):
        attention_distillation_loss(q, k, *fmap(q, k), causal=True, loss="mse")


def test_rejects_unknown_loss_and_bad_shapes():
    q, k = torch.randn(2, 1, 2, 12, 8).unbind(0)
    fq, fk = HedgehogFeatureMap(2, 8)(q, k)
    with pytest.raises(ValueError, match="xent"):
        attention_distillation_loss(q, k, fq, fk, causal=True, loss="l1")
    with pytest.raises(ValueError, match="batch, heads, tokens"):
        attention_distillation_loss(q[0], k[0], fq, fk, causal=True)
