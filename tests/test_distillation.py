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


def ragged_batch(left: bool = False):
    """Three sequences of 11, 4 and 8 real tokens in a batch of 11, padded right (or left).

    The padded positions hold random q, k, v, as a real model's do.
    """
    q, k, v = torch.randn(3, 3, 2, 11, 8, dtype=torch.float64).unbind(0)
    mask = torch.zeros(3, 11, dtype=torch.bool)
    for b, n in enumerate((11, 4, 8)):
        if left:
            mask[b, 11 - n :] = True
        else:
            mask[b, :n] = True
    return q, k, v, mask


def per_sequence_loss(q, k, v, fmap, mask, causal, loss, chunk):
    """The reference: each sequence without its padding, weighted by its real rows."""
    total, rows = 0.0, 0
    for b in range(q.shape[0]):
        keep = mask[b]
        qb, kb, vb = (t[b : b + 1, :, keep] for t in (q, k, v))
        fq, fk = fmap(qb, kb)
        n = int(keep.sum())
        total = total + n * attention_distillation_loss(
            qb, kb, fq, fk, causal, loss=loss, v=vb, query_chunk=chunk
        )
        rows += n
    return total / rows


@pytest.mark.parametrize("loss", ["xent", "kl", "mse"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("left", [False, True])
@pytest.mark.parametrize("chunk", [3, 64])
def test_key_padding_mask_equals_per_sequence_loop(loss, causal, left, chunk):
    q, k, v, mask = ragged_batch(left)
    assert mask.sum(-1).tolist() == [11, 4, 8]
    fmap = HedgehogFeatureMap(2, 8).double()
    with torch.no_grad():  # a trained-looking, non-identity map
        fmap.weight_q.add_(0.3 * torch.randn_like(fmap.weight_q))
        fmap.weight_k.add_(0.3 * torch.randn_like(fmap.weight_k))
    fq, fk = fmap(q, k)
    masked = attention_distillation_loss(
        q, k, fq, fk, causal, loss=loss, v=v, query_chunk=chunk, key_padding_mask=mask
    )
    expected = per_sequence_loss(q, k, v, fmap, mask, causal, loss, chunk)
    torch.testing.assert_close(masked, expected)
    # the mask matters: without it the padded positions change the loss
    unmasked = attention_distillation_loss(q, k, fq, fk, causal, loss=loss, v=v, query_chunk=chunk)
    assert not torch.allclose(unmasked, expected)


@pytest.mark.parametrize("loss", ["xent", "kl", "mse"])
def test_key_padding_mask_gradients_equal_per_sequence_loop(loss):
    q, k, v, mask = ragged_batch()
    fmap = HedgehogFeatureMap(2, 8).double()
    grads = []
    for masked in (True, False):
        fmap.zero_grad()
        if masked:
            value = attention_distillation_loss(
                q, k, *fmap(q, k), causal=False, loss=loss, v=v, query_chunk=4, key_padding_mask=mask
            )
        else:
            value = per_sequence_loss(q, k, v, fmap, mask, False, loss, 4)
        value.backward()
        grads.append((fmap.weight_q.grad.clone(), fmap.weight_k.grad.clone(), fmap.bias_q.grad.clone()))
    assert all(g.abs().sum() > 0 for g in grads[0])
    for got, want in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(got, want)


def test_key_padding_mask_keeps_padding_out_of_the_gradient():
    """Changing the padded q, k changes neither the loss nor the gradient."""
    q, k, _, mask = ragged_batch()
    fmap = HedgehogFeatureMap(2, 8).double()
    results = []
    for junk in (0.0, 5.0):
        q2, k2 = q.clone(), k.clone()
        pad = ~mask[:, None, :, None].expand_as(q2)
        q2[pad], k2[pad] = junk, -junk
        fmap.zero_grad()
        value = attention_distillation_loss(q2, k2, *fmap(q2, k2), causal=True, key_padding_mask=mask)
        value.backward()
        results.append((value.detach(), fmap.weight_k.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_key_padding_mask_rejects_bad_masks():
    q, k = torch.randn(2, 2, 2, 6, 8).unbind(0)
    fq, fk = HedgehogFeatureMap(2, 8)(q, k)
    with pytest.raises(ValueError, match="bool"):
        attention_distillation_loss(q, k, fq, fk, causal=False, key_padding_mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match=r"\(2, 6\)"):
        attention_distillation_loss(
            q, k, fq, fk, causal=False, key_padding_mask=torch.ones(2, 5, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="every token"):
        attention_distillation_loss(
            q, k, fq, fk, causal=False, key_padding_mask=torch.zeros(2, 6, dtype=torch.bool)
        )
