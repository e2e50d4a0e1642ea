"""The causal forms compute one function: against a float64 reference, forward and backward."""

import pytest
import torch

from hedgehog.attention import (
    Elu1FeatureMap,
    HedgehogFeatureMap,
    LinearAttention,
    LinearAttentionState,
    Taylor2FeatureMap,
    chunked_linear_attention,
    noncausal_linear_attention,
    quadratic_linear_attention,
    recurrent_linear_attention,
)


def reference(fq, fk, v, causal=True):
    """Direct float64 sum: y_n = sum_{i<=n} (fq_n.fk_i) v_i / sum_{i<=n} fq_n.fk_i."""
    fq, fk, v = fq.double(), fk.double(), v.double()
    t = fq.shape[-2]
    out = torch.empty(*fq.shape[:-1], v.shape[-1], dtype=torch.float64)
    for n in range(t):
        last = n + 1 if causal else t
        w = (fq[..., n : n + 1, :] * fk[..., :last, :]).sum(-1)
        out[..., n, :] = (w.unsqueeze(-1) * v[..., :last, :]).sum(-2) / w.sum(-1, keepdim=True)
    return out


def features(b=2, h=3, t=45, f=10, d=7, dtype=torch.float64):
    fq = torch.rand(b, h, t, f, dtype=dtype) + 0.05
    fk = torch.rand(b, h, t, f, dtype=dtype) + 0.05
    v = torch.randn(b, h, t, d, dtype=dtype)
    return fq, fk, v


FORMS = {
    "quadratic": lambda fq, fk, v: quadratic_linear_attention(fq, fk, v, causal=True, eps=0.0),
    "chunked": lambda fq, fk, v: chunked_linear_attention(fq, fk, v, chunk_size=16, eps=0.0)[0],
    "recurrent": lambda fq, fk, v: recurrent_linear_attention(fq, fk, v, eps=0.0)[0],
}


@pytest.mark.parametrize("form", FORMS)
def test_causal_forms_match_float64_reference_forward_and_backward(form):
    fq, fk, v = (x.requires_grad_() for x in features(t=45))  # 45 is not a multiple of 16
    out = FORMS[form](fq, fk, v)
    ref = reference(fq, fk, v)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (fq, fk, v), grad_out)
    ref_grads = torch.autograd.grad(ref, (fq, fk, v), grad_out)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)


def test_float32_forms_agree_with_float64_reference():
    fq, fk, v = features(t=70)
    ref = reference(fq, fk, v)
    for form in FORMS.values():
        out = form(fq.float(), fk.float(), v.float())
        assert out.dtype == torch.float32
        assert (out.double() - ref).norm() / ref.norm() < 1e-5


def test_noncausal_matches_reference():
    fq, fk, v = features(t=33)
    torch.testing.assert_close(
        noncausal_linear_attention(fq, fk, v, eps=0.0), reference(fq, fk, v, causal=False)
    )
    torch.testing.assert_close(
        quadratic_linear_attention(fq, fk, v, causal=False, eps=0.0), reference(fq, fk, v, causal=False)
    )


@pytest.mark.parametrize("t", [9, 40])
def test_noncausal_taylor2_kernel_form_matches_its_features(t):
    """Taylor-2 over fewer keys than its feature dim (1 + 4 + 16 = 21) takes the closed-form kernel
    1 + s + s^2/2; over more, the features: both equal the float64 reference of phi(q).phi(k), padded
    keys included, forward and backward."""
    layer = LinearAttention(3, 4, Taylor2FeatureMap, causal=False, eps=0.0)
    q, k, v = (torch.randn(2, 3, t, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    padding = torch.ones(2, t, dtype=torch.bool)
    padding[1, t - 3 :] = False
    out, _ = layer(q, k, v, key_padding_mask=padding)
    fq, fk = layer.features(q, k)
    fk = fk * padding[:, None, :, None]
    expected = reference(fq, fk, v, causal=False)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("split", [1, 16, 30])
def test_state_continues_a_sequence(split):
    """Prefill the first tokens, then continue from the carried state: same as one pass."""
    fq, fk, v = features(t=45)
    full, full_state = chunked_linear_attention(fq, fk, v, chunk_size=8)
    head, state = chunked_linear_attention(
        fq[..., :split, :], fk[..., :split, :], v[..., :split, :], chunk_size=8
    )
    tail, end_state = recurrent_linear_attention(
        fq[..., split:, :], fk[..., split:, :], v[..., split:, :], state=state
    )
    torch.testing.assert_close(torch.cat([head, tail], dim=-2), full)
    torch.testing.assert_close(end_state.kv, full_state.kv)
    assert end_state.offset == full_state.offset == 45


def test_state_has_constant_size():
    fq, fk, v = features(t=5)
    _, state = recurrent_linear_attention(fq, fk, v)
    _, longer = chunked_linear_attention(*features(t=500), chunk_size=64)
    assert state.kv.shape == longer.kv.shape == (2, 3, 10, 7)
    assert isinstance(state, LinearAttentionState)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_long_half_precision_input_stays_finite(dtype):
    """65,536 tokens in bf16/fp16: fp32 accumulation keeps the denominator finite."""
    t, d = 65_536, 8
    q, k, v = (torch.randn(1, 1, t, d, dtype=dtype) * 3 for _ in range(3))
    attn = LinearAttention(1, d, HedgehogFeatureMap, chunk_size=1024)
    with torch.no_grad():
        out, state = attn(q, k, v)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    assert torch.isfinite(state.kv).all() and state.kv.dtype == torch.float32
    # The last token sees every key: compare it with a float64 sum over the whole sequence.
    fq, fk = (f.double() for f in attn.features(q, k))
    kv, k_sum = fk.transpose(-1, -2) @ v.double(), fk.sum(-2)
    ref = (fq[..., -1, :] @ kv) / (fq[..., -1, :] @ k_sum.unsqueeze(-1))
    assert (out[..., -1, :].double() - ref).norm() / ref.norm() < 2e-2


def test_layer_forms_agree():
    q, k, v = torch.randn(3, 2, 4, 37, 8).unbind(0)
    outs = [
        LinearAttention(4, 8, Elu1FeatureMap, causal_form=form, chunk_size=8)(q, k, v)[0]
        for form in ("quadratic", "chunked", "recurrent")
    ]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[0], outs[2], rtol=1e-5, atol=1e-5)


def test_key_padding_mask_removes_keys():
    q, k, v = torch.randn(3, 1, 2, 10, 8).unbind(0)
    attn = LinearAttention(2, 8, Elu1FeatureMap, causal=False)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[:, 7:] = False
    masked, _ = attn(q, k, v, key_padding_mask=mask)
    trimmed, _ = attn(q, k[..., :7, :], v[..., :7, :])
    torch.testing.assert_close(masked, trimmed)
