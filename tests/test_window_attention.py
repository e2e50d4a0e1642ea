"""The sliding-window hybrid (LoLCATs): its forms against a float64 computation of the defining equation,
states that continue a sequence, padding, large scores, distillation, and a converted tiny Llama."""

import math
from functools import cache, partial

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from hedgehog.attention import (
    HedgehogFeatureMap,
    SlidingWindowLinearAttention,
    WindowAttentionState,
    attention_distillation_loss,
    chunked_window_attention,
    quadratic_window_attention,
    recurrent_window_attention,
    softmax_attention_weights,
    window_attention_state,
    window_state_after,
)
from hedgehog.config import compose
from hedgehog.models.cache import LinearAttentionCache
from hedgehog.models.conversion import (
    convert,
    distillation_losses,
    feature_map_parameters,
    feature_map_state_dict,
    load_feature_maps,
    set_stage,
)
from tests.test_state_cache import SPLITS, check_reorder_and_repeat, greedy, tiny_llama


def reference_weights(q, k, fq, fk, window, gamma, mask=None, eps=0.0):
    """The defining equation row by row in float64: gamma exp(s - m) in the window, phi.phi before it.

    The forms divide numerator and denominator by gamma_h, so their eps stands for gamma_h eps here.
    """
    q, k, fq, fk, gamma = (x.double() for x in (q, k, fq, fk, gamma))
    b, _, t, d = q.shape
    mask = torch.ones(b, t, dtype=torch.bool) if mask is None else mask
    rows = []
    for i in range(t):
        j = torch.arange(t)
        real = mask[:, None, :]  # (B, 1, T)
        in_window = (j <= i) & (j > i - window) & real
        before = (j <= i - window) & real
        s = torch.einsum("bhd,bhtd->bht", q[..., i, :], k) / math.sqrt(d)
        lin = torch.einsum("bhf,bhtf->bht", fq[..., i, :], fk)
        s_window = s.masked_fill(~in_window, float("-inf"))
        m = s_window.amax(-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        a = gamma[:, None] * torch.exp(s_window - m) + lin * before
        total = a.sum(-1, keepdim=True) + gamma[:, None] * eps
        rows.append(a / torch.where(total > 0, total, torch.ones_like(total)))  # a padded row: all 0
    return torch.stack(rows, dim=-2)


def reference(q, k, v, fq, fk, window, gamma, mask=None, eps=0.0):
    return reference_weights(q, k, fq, fk, window, gamma, mask, eps) @ v.double()


def hedgehog_map(h=3, d=8):
    """A float64 Hedgehog map moved off its identity init, so its parameters matter."""
    fmap = HedgehogFeatureMap(h, d).double()
    with torch.no_grad():
        for p in fmap.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return fmap


def qkv(b=2, h=3, t=45, d=8, dtype=torch.float64):
    return torch.randn(3, b, h, t, d, dtype=dtype).unbind(0)


FORMS = {
    "quadratic": lambda *a, **kw: quadratic_window_attention(*a, eps=0.0, **kw),
    "chunked": lambda *a, **kw: chunked_window_attention(*a, chunk_size=16, eps=0.0, **kw)[0],
    "recurrent": lambda *a, **kw: recurrent_window_attention(*a, eps=0.0, **kw)[0],
}
# windows shorter than, equal to and longer than the sequence; lengths not multiples of the chunk (16)
WINDOWS_AND_LENGTHS = [(8, 5), (8, 8), (8, 45), (20, 45), (1, 21), (64, 45)]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("window, t", WINDOWS_AND_LENGTHS)
def test_forms_match_float64_reference_forward_and_backward(form, window, t):
    q, k, v = (x.requires_grad_() for x in qkv(t=t))
    fmap = hedgehog_map()
    theta = torch.randn(3, dtype=torch.float64, requires_grad=True)
    fq, fk = fmap(q, k)
    gamma = torch.sigmoid(theta)
    out = FORMS[form](q, k, v, fq, fk, window, gamma)
    ref = reference(q, k, v, fq, fk, window, gamma)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    inputs = (q, k, v, theta, *fmap.parameters())
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, grad_out, retain_graph=True)
    ref_grads = torch.autograd.grad(ref, inputs, grad_out)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)
    if window < t:  # the linear part and the window factor both shape the output
        assert theta.grad is None and ref_grads[3].abs().min() > 0


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("window", [13, 64])
def test_a_window_covering_the_sequence_is_softmax_attention(form, window):
    """Every key in the window: gamma cancels and the features get no gradient."""
    q, k, v = qkv(t=13)
    fq, fk = (x.requires_grad_() for x in hedgehog_map()(q, k))
    gamma = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    out = FORMS[form](q, k, v, fq, fk, window, gamma)
    softmax = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, softmax, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out, (fq, fk, gamma), torch.randn_like(out), allow_unused=True)
    assert all(g is None or g.abs().max() < 1e-12 for g in grads)


@pytest.mark.parametrize("form", FORMS)
def test_a_window_of_one_is_linear_attention_with_gamma_on_the_diagonal(form):
    """y_i = (gamma v_i + sum_{j<i} phi_i.phi_j v_j) / (gamma + sum_{j<i} phi_i.phi_j): exp(s_ii - m_i) = 1."""
    q, k, v = qkv(t=21)
    fq, fk = hedgehog_map()(q, k)
    gamma = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    lin = (fq @ fk.transpose(-1, -2)).tril(-1)
    weights = lin + torch.diag_embed(gamma[:, None].expand(3, 21))
    expected = (weights @ v) / weights.sum(-1, keepdim=True)
    torch.testing.assert_close(FORMS[form](q, k, v, fq, fk, 1, gamma), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_a_vanishing_window_factor_leaves_linear_attention_before_the_window(form):
    """gamma -> 0: rows with keys before the window attend to those alone (linearly); earlier rows keep softmax."""
    window, t = 6, 30
    q, k, v = qkv(t=t)
    fq, fk = hedgehog_map()(q, k)
    out = FORMS[form](q, k, v, fq, fk, window, torch.full((3,), 1e-13, dtype=torch.float64))
    lin = (fq @ fk.transpose(-1, -2)).tril(-window)
    linear = (lin @ v) / lin.sum(-1, keepdim=True)
    torch.testing.assert_close(out[..., window:, :], linear[..., window:, :], rtol=1e-9, atol=1e-9)
    softmax = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out[..., :window, :], softmax[..., :window, :], rtol=1e-12, atol=1e-12)


def assert_same_state(a: WindowAttentionState, b: WindowAttentionState) -> None:
    assert a.offset == b.offset
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor):
            assert x.shape == y.shape
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("split", [1, 7, 11, 12, 30])
def test_prefill_then_decode_or_chunks_equals_the_full_forward(split):
    """Window 12, 45 tokens: prefill `split` tokens, then one token at a time, or in chunks of 5."""
    window = 12
    q, k, v = qkv(t=45)
    fq, fk = hedgehog_map()(q, k)
    gamma = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    full, full_state = chunked_window_attention(q, k, v, fq, fk, window, gamma, chunk_size=8)

    def part(a, b):
        return (x[..., a:b, :] for x in (q, k, v, fq, fk))

    head, state = chunked_window_attention(*part(0, split), window, gamma, chunk_size=8)
    assert state.keys.shape[-2] == min(split, window - 1)
    tail, decoded = recurrent_window_attention(*part(split, 45), window, gamma, state=state)
    torch.testing.assert_close(torch.cat([head, tail], dim=-2), full, rtol=1e-12, atol=1e-12)
    assert_same_state(decoded, full_state)

    pieces, chunked = [head], state
    for a in range(split, 45, 5):
        out, chunked = chunked_window_attention(
            *part(a, min(a + 5, 45)), window, gamma, chunk_size=3, state=chunked
        )
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, dim=-2), full, rtol=1e-12, atol=1e-12)
    assert_same_state(chunked, full_state)


@pytest.mark.parametrize("form", ["quadratic", "chunked", "recurrent"])
def test_module_forms_agree_with_the_reference_and_hand_on_the_same_state(form):
    """The module: gradients reach the feature map and the window factor logits; its state is the chunked one."""
    attn = SlidingWindowLinearAttention(
        3, 8, HedgehogFeatureMap, window=5, causal_form=form, chunk_size=4, eps=0.0
    ).double()
    with torch.no_grad():
        attn.window_factor_logit.copy_(torch.tensor([-2.0, 0.0, 1.0]))
    q, k, v = qkv(t=19)
    out, state = attn(q, k, v)
    fq, fk = attn.features(q, k)
    ref = reference(q, k, v, fq, fk, 5, attn.window_factors())
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    names, params = zip(*attn.named_parameters(), strict=True)
    grads = torch.autograd.grad(out.sum(), params, retain_graph=True)
    ref_grads = torch.autograd.grad(ref.sum(), params)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)
    assert grads[names.index("window_factor_logit")].abs().min() > 0
    _, chunked_state = chunked_window_attention(q, k, v, fq, fk, 5, attn.window_factors(), chunk_size=4)
    assert_same_state(state, chunked_state)


def ragged(left: bool, t: int = 17):
    """Three sequences of 17, 9 and 4 real tokens padded to 17 (right or left); padding holds random junk."""
    q, k, v = qkv(b=3, t=t)
    mask = torch.zeros(3, t, dtype=torch.bool)
    for row, n in enumerate((17, 9, 4)):
        if left:
            mask[row, t - n :] = True
        else:
            mask[row, :n] = True
    return q, k, v, mask


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("left", [False, True])
def test_key_padding_gives_the_unpadded_result_at_real_positions(form, left):
    q, k, v, mask = ragged(left)
    fmap = hedgehog_map()
    fq, fk = fmap(q, k)
    gamma = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    run = {
        "quadratic": lambda *a, **kw: quadratic_window_attention(*a, **kw),
        "chunked": lambda *a, **kw: chunked_window_attention(*a, chunk_size=5, **kw)[0],
        "recurrent": lambda *a, **kw: recurrent_window_attention(*a, **kw)[0],
    }[form]
    padded = run(q, k, v, fq, fk, 6, gamma, key_padding_mask=mask)
    assert torch.isfinite(padded).all()
    for row in range(3):
        keep = mask[row]
        alone = run(*(x[row : row + 1, :, keep] for x in (q, k, v, fq, fk)), 6, gamma)
        torch.testing.assert_close(padded[row : row + 1, :, keep], alone, rtol=1e-10, atol=1e-10)
    if left:  # the mask matters: without it the padded keys change the real rows (causal: only on the left)
        unmasked = run(q, k, v, fq, fk, 6, gamma)
        assert not torch.allclose(unmasked.transpose(1, 2)[mask], padded.transpose(1, 2)[mask])


def test_a_left_padded_prefill_decodes_like_each_sequence_alone():
    """The padding mask travels in the state: decoding after a left-padded prefill ignores the padded keys."""
    q, k, v, mask = ragged(left=True, t=17)
    extra = qkv(b=3, t=5)
    fmap = hedgehog_map()
    gamma = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    fq, fk = fmap(q, k)
    _, state = chunked_window_attention(q, k, v, fq, fk, 6, gamma, chunk_size=4, key_padding_mask=mask)
    fq2, fk2 = fmap(extra[0], extra[1])
    decoded, _ = recurrent_window_attention(*extra[:3], fq2, fk2, 6, gamma, state=state)
    for row in range(3):
        keep = mask[row]
        seq = [
            torch.cat([x[row : row + 1, :, keep], y[row : row + 1]], dim=-2)
            for x, y in zip((q, k, v), extra, strict=True)
        ]
        fq_all, fk_all = fmap(seq[0], seq[1])
        alone, _ = chunked_window_attention(*seq, fq_all, fk_all, 6, gamma, chunk_size=4)
        torch.testing.assert_close(decoded[row : row + 1], alone[..., -5:, :], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("form", FORMS)
def test_large_scores_stay_finite_and_correct(form):
    """|q.k/sqrt(d)| in the hundreds (exp overflows float32 above 88): every window term lies in (0, gamma]."""
    q, k, v = qkv(t=40, dtype=torch.float32)
    q, k = 12 * q, 12 * k
    assert (q @ k.transpose(-1, -2)).abs().max() / math.sqrt(8) > 500
    fq, fk = (x.requires_grad_() for x in HedgehogFeatureMap(3, 8)(q, k))
    gamma = torch.tensor([0.1, 0.5, 0.9], requires_grad=True)
    out = FORMS[form](q, k, v, fq, fk, 8, gamma)
    assert out.dtype == torch.float32
    ref = reference(q, k, v, fq.detach(), fk.detach(), 8, gamma.detach())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=1e-3, atol=1e-3)
    grads = torch.autograd.grad(out.sum(), (fq, fk, gamma))
    assert all(torch.isfinite(g).all() for g in grads)
    half, _ = chunked_window_attention(
        q.bfloat16(), k.bfloat16(), v.bfloat16(), fq, fk, 8, gamma, chunk_size=16
    )
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()


@pytest.mark.parametrize("form", FORMS)
def test_autocast_does_not_round_the_scores(form):
    """Under bf16 autocast the float32 inputs still give the float32 result (scores of 20 and more)."""
    q, k, v = qkv(t=30, dtype=torch.float32)
    q, k = 3 * q, 3 * k
    fq, fk = HedgehogFeatureMap(3, 8)(q, k)
    gamma = torch.tensor([0.1, 0.5, 0.9])
    exact = FORMS[form](q, k, v, fq, fk, 8, gamma)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = FORMS[form](q, k, v, fq, fk, 8, gamma)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, exact, rtol=0, atol=0)


def test_the_state_is_fixed_in_size_once_the_window_is_full():
    window = 8
    fmap = HedgehogFeatureMap(3, 8)
    sizes = []
    for t in (7, 50, 300):
        q, k, v = qkv(t=t, dtype=torch.float32)
        _, state = chunked_window_attention(q, k, v, *fmap(q, k), window, torch.full((3,), 0.1))
        sizes.append([tuple(x.shape) for x in state if isinstance(x, torch.Tensor)])
    assert sizes[0] == sizes[1] == sizes[2]
    assert sizes[0] == [(2, 3, 16, 8), (2, 3, 16), (2, 3, 7, 8), (2, 3, 7, 16), (2, 3, 7, 8), (2, 7)]


def test_module_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="causal only"):
        SlidingWindowLinearAttention(2, 8, HedgehogFeatureMap, causal=False)
    with pytest.raises(ValueError, match="causal_form"):
        SlidingWindowLinearAttention(2, 8, HedgehogFeatureMap, causal_form="parallel")
    with pytest.raises(ValueError, match="window"):
        SlidingWindowLinearAttention(2, 8, HedgehogFeatureMap, window=0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        SlidingWindowLinearAttention(2, 8, HedgehogFeatureMap, window_factor=1.0)
    attn = SlidingWindowLinearAttention(2, 8, HedgehogFeatureMap, window=4)
    q, k, v = qkv(b=1, h=2, t=6, dtype=torch.float32)
    _, state = attn(q, k, v)
    with pytest.raises(ValueError, match="key_padding_mask"):
        attn(q, k, v, key_padding_mask=torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="start a new state"):
        attn(*qkv(b=2, h=2, t=1, dtype=torch.float32), cache=state)
    with pytest.raises(ValueError, match="one factor per head"):
        chunked_window_attention(q, k, v, *attn.features(q, k), 4, torch.ones(3))


# ---------------------------------------------------------------- distillation


def direct_loss(q, k, v, fq, fk, window, gamma, loss, mask=None, eps=0.0):
    """Teacher: causal softmax; student: the reference hybrid; mean over (batch, head, real row)."""
    b, h, t, _ = q.shape
    mask = torch.ones(b, t, dtype=torch.bool) if mask is None else mask
    teacher = softmax_attention_weights(q, k, causal=True, key_padding_mask=mask).double()
    student = reference_weights(q, k, fq, fk, window, gamma, mask, eps)
    rows = mask[:, None, :].expand(b, h, t)
    if loss == "mse":
        return ((student @ v.double() - teacher @ v.double())[rows] ** 2).mean()
    terms = -(teacher * student.clamp_min(1e-300).log()).sum(-1)
    if loss == "kl":
        terms = terms + torch.where(teacher > 0, teacher * teacher.log(), torch.zeros_like(teacher)).sum(-1)
    return terms[rows].mean()


@pytest.mark.parametrize("loss", ["xent", "kl", "mse"])
@pytest.mark.parametrize("chunk", [4, 7, 64])
@pytest.mark.parametrize("padding", [None, "right", "left"])
def test_hybrid_distillation_matches_a_direct_float64_computation(loss, chunk, padding):
    if padding is None:
        q, k, v = qkv(b=3, t=17)
        mask = None
    else:
        q, k, v, mask = ragged(left=padding == "left")
    eps = 0.0 if padding is None else 1e-6  # padded rows have nothing in their window: eps keeps them finite
    fmap = hedgehog_map()
    theta = torch.tensor([-2.2, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    gamma = torch.sigmoid(theta)
    fq, fk = fmap(q, k)
    value = attention_distillation_loss(
        q, k, fq, fk, causal=True, loss=loss, v=v, query_chunk=chunk, eps=eps, key_padding_mask=mask,
        window=6, window_factor=gamma,
    )  # fmt: skip
    expected = direct_loss(q, k, v, fq, fk, 6, gamma, loss, mask, eps)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-12)
    params = (theta, *fmap.parameters())
    grads = torch.autograd.grad(value, params, retain_graph=True)
    ref_grads = torch.autograd.grad(expected, params)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-12)
    assert grads[0].abs().min() > 0


def test_a_perfect_hybrid_student_has_zero_kl_and_zero_gradient():
    """Keys c e_j and phi_q(q_i) = gamma exp(c q_i / sqrt(d) - m_i), phi_k(k) = k / c: the linear terms
    equal gamma exp(s - m_i), so the hybrid reproduces softmax exactly, a minimum of the loss in every input."""
    d, c, window = 6, 2.0, 3
    q = torch.randn(1, 1, d, d, dtype=torch.float64)
    k = c * torch.eye(d, dtype=torch.float64).expand(1, 1, d, d)
    gamma = torch.tensor([0.3], dtype=torch.float64)
    s = q @ k.transpose(-1, -2) / math.sqrt(d)
    lag = torch.arange(d)[:, None] - torch.arange(d)[None, :]
    m = s.masked_fill(~((lag >= 0) & (lag < window)), float("-inf")).amax(-1, keepdim=True)
    fq = (gamma * torch.exp(c * q / math.sqrt(d) - m)).requires_grad_()
    fk = (k / c).clone().requires_grad_()
    gamma.requires_grad_()
    args = dict(causal=True, eps=0.0, window=window, window_factor=gamma)
    xent = attention_distillation_loss(q, k, fq, fk, loss="xent", **args)
    kl = attention_distillation_loss(q, k, fq, fk, loss="kl", **args)
    teacher = softmax_attention_weights(q, k, causal=True)
    entropy = -(teacher * teacher.clamp_min(1e-300).log()).sum(-1).mean()
    torch.testing.assert_close(xent, entropy)
    assert abs(kl.item()) < 1e-12
    assert all(g.abs().max() < 1e-12 for g in torch.autograd.grad(xent, (fq, fk, gamma)))
    mse = attention_distillation_loss(q, k, fq, fk, loss="mse", v=torch.randn_like(q), **args)
    assert mse.item() < 1e-28


def test_hybrid_distillation_rejects_half_a_specification():
    q, k = qkv(t=6)[:2]
    fq, fk = hedgehog_map()(q, k)
    with pytest.raises(ValueError, match="both window= and window_factor="):
        attention_distillation_loss(q, k, fq, fk, causal=True, window=4)
    with pytest.raises(ValueError, match="causal only"):
        attention_distillation_loss(q, k, fq, fk, causal=False, window=4, window_factor=torch.ones(3))


# ---------------------------------------------------------------- a converted tiny Llama


@cache
def hedgehog_window_config():
    return compose(["attention=hedgehog_window"]).attention


def hybrid_llama(window: int):
    """A tiny random Llama (GQA, RoPE) converted with conf/attention/hedgehog_window.yaml, window overridden."""
    config = hedgehog_window_config()
    assert config.window == 64 and config.feature_map._target_.endswith("HedgehogFeatureMap")
    model = tiny_llama()
    convert(model, partial(instantiate(config), window=window))
    return model


def test_a_converted_llama_with_a_window_covering_the_sequence_reproduces_its_logits():
    ids = torch.randint(1, 100, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, :6] = 0  # left padding
    mask[2, :13] = 0
    original = tiny_llama()
    with torch.no_grad():
        reference_logits = original(input_ids=ids, attention_mask=mask).logits
        model = hybrid_llama(window=64)
        model.load_state_dict(original.state_dict(), strict=False)
        logits = model(input_ids=ids, attention_mask=mask).logits
        narrow = hybrid_llama(window=4)
        narrow.load_state_dict(original.state_dict(), strict=False)
        narrow_logits = narrow(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(logits[real], reference_logits[real], atol=1e-5, rtol=1e-5)
    assert (narrow_logits[real] - reference_logits[real]).abs().max() > 1e-3  # the linear part is live


def test_a_converted_llama_decodes_from_the_cache_like_the_full_forward():
    model = hybrid_llama(window=4)
    ids = torch.randint(1, 100, (2, 15))
    cache_ = LinearAttentionCache(model)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        steps = [model(input_ids=ids[:, a:b], cache=cache_, use_cache=True).logits for a, b in SPLITS]
    assert cache_.get_seq_length() == 15
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_a_converted_llama_generates_from_the_cache_also_left_padded():
    model = hybrid_llama(window=3)
    prompts = [torch.randint(1, 100, (n,)) for n in (7, 4, 2)]
    ids = torch.stack([torch.cat([torch.zeros(7 - len(p), dtype=torch.long), p]) for p in prompts])
    mask = (torch.arange(7) >= 7 - torch.tensor([[7], [4], [2]])).long()
    with torch.no_grad():
        batch = greedy(model, ids, attention_mask=mask, cache=LinearAttentionCache(model), output_logits=True)
        uncached = greedy(model, ids, attention_mask=mask, use_cache=False)
        full_mask = torch.cat([mask, torch.ones(3, 10, dtype=torch.long)], dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp_min(0)  # as generate numbers left-padded tokens
        full = model(input_ids=batch.sequences, attention_mask=full_mask, position_ids=positions)
        for row, prompt in enumerate(prompts):
            alone = greedy(model, prompt[None], cache=LinearAttentionCache(model), output_logits=True)
            assert torch.equal(batch.sequences[row, 7:], alone.sequences[0, len(prompt) :])
            torch.testing.assert_close(
                torch.stack(batch.logits)[:, row], torch.stack(alone.logits)[:, 0], atol=1e-5, rtol=1e-5
            )
    assert torch.equal(batch.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(batch.logits, dim=1), full.logits[:, 6:-1], atol=1e-5, rtol=1e-5)


def test_the_cache_does_not_grow_with_the_context():
    window, heads, head_dim, features = 4, 4, 8, 16  # kv heads are repeated to the 4 query heads
    model = hybrid_llama(window=window)
    cache_ = LinearAttentionCache(model)
    ids = torch.randint(1, 100, (1, 64))
    with torch.no_grad():
        model(input_ids=ids[:, :16], cache=cache_, use_cache=True)
        bytes_16 = cache_.nbytes()
        for t in range(16, 64):
            model(input_ids=ids[:, t : t + 1], cache=cache_, use_cache=True)
    buffered = window - 1
    per_layer = 4 * heads * features * (head_dim + 1)  # S and z, float32
    per_layer += (
        4 * heads * buffered * (head_dim + features + head_dim) + buffered
    )  # keys, features, values, mask
    assert cache_.nbytes() == bytes_16 == 2 * per_layer
    assert cache_.get_seq_length() == 64
    assert all(isinstance(layer.state, WindowAttentionState) for layer in cache_.layers)


def test_beam_search_and_batch_expansion_reorder_every_field_of_the_state():
    def compare_states(a: LinearAttentionCache, b: LinearAttentionCache) -> None:
        for la, lb in zip(a.layers, b.layers, strict=True):
            assert_close_state(la.state, lb.state)

    check_reorder_and_repeat(hybrid_llama(window=3), compare_states)


def assert_close_state(a: WindowAttentionState, b: WindowAttentionState) -> None:
    assert a.offset == b.offset
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_the_distill_stage_trains_exactly_the_feature_maps_and_window_factors(loss):
    model = hybrid_llama(window=3)
    counts = set_stage(model, "distill")
    trained = feature_map_parameters(model)
    factors = {n for n in trained if n.endswith("converted_attention.attention.window_factor_logit")}
    assert len(factors) == 2 and len(trained) == 2 * (4 + 1)  # per layer: W_q, b_q, W_k, b_k and the factors
    assert counts["trainable"] == sum(p.numel() for p in trained.values())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(trained)
    ids = torch.randint(1, 100, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :4] = 0
    model(input_ids=ids, attention_mask=mask)
    losses = distillation_losses(model, loss)
    assert len(losses) == 2 and all(x.item() > 0 for x in losses)
    torch.stack(losses).mean().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == set(trained)
    assert all(trained[n].grad.abs().min() > 0 for n in factors)
    # the window factors are saved and loaded with the feature maps
    state = feature_map_state_dict(model)
    assert factors <= set(state)
    other = hybrid_llama(window=3)
    load_feature_maps(other, state)
    for name, value in feature_map_state_dict(other).items():
        assert torch.equal(value, state[name])


@pytest.mark.parametrize("t", [10, 63, 64, 150])
def test_window_state_after_matches_the_state_of_the_forms(t):
    """The state made from the linear state of all keys (what the kernels return) equals the one the
    quadratic and chunked forms hand on: the last window - 1 tokens taken out again and kept exactly,
    padded keys left out."""
    torch.manual_seed(0)
    k, v = torch.randn(2, 3, t, 8, dtype=torch.float64), torch.randn(2, 3, t, 5, dtype=torch.float64)
    fk = torch.rand(2, 3, t, 6, dtype=torch.float64)
    mask = torch.ones(2, t, dtype=torch.bool)
    mask[1, ::3] = False
    kept = fk * mask[:, None, :, None]
    state = window_state_after(kept.transpose(-1, -2) @ v, kept.sum(-2), k, fk, v, 64, mask)
    ref = window_attention_state(k, fk, v, 64, mask)
    assert state.offset == ref.offset == t
    for name in ("kv", "k_sum", "keys", "key_features", "values", "key_mask"):
        a, b = getattr(state, name), getattr(ref, name)
        assert a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=1e-12), name
