"""H3 and Hyena: the FFT convolution, the mixers against direct references, decoding, padding, config."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from hedgehog.attention import SoftmaxAttention, build_attention
from hedgehog.config import compose
from hedgehog.mixers import (
    H3,
    Hyena,
    HyenaState,
    causal_conv,
    fft_length,
    fftconv,
    hybrid_attention_layers,
    hybrid_h3,
)
from hedgehog.models import TransformerLM
from hedgehog.models.cache import LinearAttentionCache
from hedgehog.models.conversion import (
    MaskedKVCache,
    convert,
    converted_layers,
    distillation_losses,
    feature_map_parameters,
    generates_from_state,
    set_stage,
)
from hedgehog.train import train

from .pipeline import TINY, compose_config
from .test_conversion import tiny_bert, tiny_gpt2
from .test_state_cache import check_reorder_and_repeat, greedy

H, D = 2, 4
MIXERS = {
    "h3": partial(H3, shift_size=5),
    "h3_elementwise": partial(H3, shift_size=3, ssm_head_dim=1),
    "hyena": partial(Hyena, max_len=64),
}


def mixer(name):
    return MIXERS[name](num_heads=H, head_dim=D, causal=True).double()


def qkv(t, b=2):
    return tuple(torch.randn(b, H, t, D, dtype=torch.float64) for _ in range(3))


def split(x, *bounds):
    return [x[:, :, lo:hi] for lo, hi in zip((0, *bounds), (*bounds, x.shape[2]), strict=True)]


def direct_causal_conv(u, k, d):
    """y_t = sum_{s<=t} k_{t-s} u_s + d u_t, by the definition."""
    y = torch.zeros_like(u)
    for t in range(u.shape[-1]):
        for s in range(t + 1):
            y[..., t] += k[..., t - s] * u[..., s]
    return y + d[..., None] * u


# --- FFT convolution ------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 7, 45, 100, 257])
def test_fftconv_equals_direct_causal_convolution(t):
    u = torch.randn(2, 3, t, dtype=torch.float64)
    k = torch.randn(3, t + 5, dtype=torch.float64)  # longer filters use their first t taps
    d = torch.randn(3, dtype=torch.float64)
    y = fftconv(u, k, d)
    assert y.shape == u.shape and y.dtype == torch.float64
    torch.testing.assert_close(y, direct_causal_conv(u, k[:, :t], d), rtol=1e-10, atol=1e-10)


def test_fft_length_is_a_smooth_size_of_at_least_n():
    for n in [1, 2, 7, 90, 514, 2048, 2049]:
        size = fft_length(n)
        assert size >= n and size < 2 * n + 1
        for p in (2, 3, 5):
            while size % p == 0:
                size //= p
        assert size == 1
    assert fft_length(514) == 540 and fft_length(2048) == 2048


def test_fftconv_runs_in_float32_under_half_autocast():
    u = torch.randn(2, 3, 40).bfloat16()
    k = torch.randn(3, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fftconv(u, k, torch.ones(3))
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, fftconv(u.float(), k, torch.ones(3)))


def test_fftconv_rejects_a_filter_shorter_than_the_signal():
    with pytest.raises(ValueError, match="at least as long"):
        fftconv(torch.randn(1, 2, 10), torch.randn(2, 9))


def test_causal_conv_carries_its_past_across_calls():
    x, w, bias = (torch.randn(*shape, dtype=torch.float64) for shape in ((2, 3, 12), (3, 4), (3,)))
    full, _ = causal_conv(x, w, bias=bias)
    first, past = causal_conv(x[..., :5], w, bias=bias)
    second, _ = causal_conv(x[..., 5:], w, past, bias=bias)
    torch.testing.assert_close(torch.cat([first, second], -1), full)
    taps = F.pad(w, (0, 8))  # lags 4.. are zero
    torch.testing.assert_close(
        full, direct_causal_conv(x, taps, torch.zeros(3, dtype=torch.float64)) + bias[:, None]
    )


# --- the mixers against their equations, token by token ---------------------------------------------


def channels(x):
    b, h, t, d = x.shape
    return x.transpose(2, 3).reshape(b, h * d, t)


def h3_reference(m, q, k, v):
    """H3 from its equations: the shift SSM's taps, the diagonal SSM's recurrence x_t = A_bar x + B_bar u."""
    q, k, v = channels(q), channels(k), channels(v)
    b, c, t = k.shape
    g, dh = m.groups, m.ssm_head_dim
    k_bar = m.shift_d[:, None] * k
    for lag in range(m.shift_taps.shape[1]):
        k_bar[..., lag:] += m.shift_taps[:, lag, None] * k[..., : t - lag]
    a = torch.complex(-torch.exp(m.log_a_real), m.a_imag)
    dt = torch.exp(m.log_dt)[:, None]
    a_bar = torch.exp(dt * a)  # zero-order hold
    b_bar = (a_bar - 1) / a * torch.view_as_complex(m.b)
    c_ssm = torch.view_as_complex(m.c)
    x = torch.zeros(b, g, dh, dh, a.shape[-1], dtype=a_bar.dtype)
    out = []
    for i in range(t):
        kh, vh, qh = (z[..., i].reshape(b, g, dh) for z in (k_bar, v, q))
        u = kh[:, :, :, None] * vh[:, :, None, :]  # K_bar V^T
        x = a_bar[:, None, None] * x + b_bar[:, None, None] * u[..., None]
        kv = 2 * (c_ssm[:, None, None] * x).sum(-1).real + m.d[:, None, None] * u
        out.append(torch.einsum("bgi,bgij->bgj", qh, kv).reshape(b, c))
    y = torch.stack(out, -1)
    return y.view(b, H, D, t).transpose(2, 3)


def hyena_reference(m, q, k, v):
    """Hyena from its equations: explicit short convolutions, a direct O(T^2) long convolution."""
    t = q.shape[2]
    x = torch.cat([channels(q), channels(k), channels(v)], 1)
    short = m.short_bias[:, None].expand_as(x).clone()
    for lag in range(m.short_weight.shape[1]):
        short[..., lag:] += m.short_weight[:, lag, None] * x[..., : t - lag]
    x1, x2, xv = short.split(m.channels, 1)
    y = x1 * direct_causal_conv(x2 * xv, m.filter(t), m.d)
    return y.view(q.shape[0], H, D, t).transpose(2, 3)


@pytest.mark.parametrize("name", ["h3", "h3_elementwise"])
def test_h3_equals_its_recurrence(name):
    m = mixer(name)
    q, k, v = qkv(19)
    out, _ = m(q, k, v)
    torch.testing.assert_close(out, h3_reference(m, q, k, v), rtol=1e-10, atol=1e-10)


def test_hyena_equals_direct_convolution():
    m = mixer("hyena")
    q, k, v = qkv(19)
    out, _ = m(q, k, v)
    torch.testing.assert_close(out, hyena_reference(m, q, k, v), rtol=1e-10, atol=1e-10)


def test_hyena_filter_decays_and_covers_max_len():
    m = Hyena(num_heads=H, head_dim=D, max_len=200)
    h = m.filter(200)
    assert h.shape == (H * D, 200)
    window = torch.exp(-m.filter.t[:, None] * m.filter.decay).T
    assert window[:, 0].eq(1).all() and window[:, -1].max() < 0.05  # decays to ~1e-2 by the end at most


# --- behaviour every mixer must have ------------------------------------------------------------------


@pytest.mark.parametrize("name", MIXERS)
def test_causal(name):
    m = mixer(name)
    q, k, v = qkv(20)
    out, _ = m(q, k, v)
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, 12:] = torch.randn_like(x[:, :, 12:])
    out2, _ = m(q2, k2, v2)
    torch.testing.assert_close(out2[:, :, :12], out[:, :, :12], rtol=0, atol=1e-12)  # FFT round-off only
    assert not torch.allclose(out2[:, :, 12:], out[:, :, 12:])


@pytest.mark.parametrize("name", MIXERS)
def test_prefill_then_decode_equals_full_forward(name):
    m = mixer(name)
    q, k, v = qkv(23)
    full, _ = m(q, k, v)
    outs, state = [], None
    for qs, ks, vs in zip(*(split(x, 9, *range(10, 23)) for x in (q, k, v)), strict=True):
        out, state = m(qs, ks, vs, cache=state)
        outs.append(out)
    assert state.offset == 23
    torch.testing.assert_close(torch.cat(outs, 2), full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MIXERS)
def test_prefix_then_chunk_equals_full_forward(name):
    m = mixer(name)
    q, k, v = qkv(30)
    full, _ = m(q, k, v)
    outs, state = [], None
    for qs, ks, vs in zip(*(split(x, 11, 25) for x in (q, k, v)), strict=True):
        out, state = m(qs, ks, vs, cache=state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 2), full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["h3", "h3_elementwise"])
def test_h3_state_does_not_grow(name):
    m = mixer(name)
    _, short = m(*qkv(5))
    _, long = m(*qkv(40))
    assert short.k_past.shape == long.k_past.shape and short.ssm.shape == long.ssm.shape


@pytest.mark.parametrize("name", MIXERS)
def test_gradients_reach_every_parameter(name):
    m = mixer(name)
    q, k, v = (x.requires_grad_() for x in qkv(16))
    out, _ = m(q, k, v)
    out.square().sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert all(x.grad.abs().sum() > 0 for x in (q, k, v))


@pytest.mark.parametrize("name", MIXERS)
def test_right_padding_leaves_real_positions_unchanged(name):
    m = mixer(name)
    q, k, v = qkv(14, b=1)
    real, _ = m(*(x[:, :, :10] for x in (q, k, v)))
    mask = torch.arange(14)[None] < 10
    padded, state = m(q, k, v, key_padding_mask=mask)
    torch.testing.assert_close(padded[:, :, :10], real, rtol=1e-10, atol=1e-10)
    assert state.offset == 14


@pytest.mark.parametrize("name", MIXERS)
def test_left_padding_gives_the_unpadded_outputs_and_state(name):
    m = mixer(name)
    q, k, v = qkv(14, b=1)
    real, real_state = m(*(x[:, :, 4:] for x in (q, k, v)))
    mask = torch.arange(14)[None] >= 4
    padded, state = m(q, k, v, key_padding_mask=mask)
    torch.testing.assert_close(padded[:, :, 4:], real, rtol=1e-10, atol=1e-10)
    # the next token sees the same past, whatever padding came before it
    step = qkv(1, b=1)
    torch.testing.assert_close(
        m(*step, cache=state)[0], m(*step, cache=real_state)[0], rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("name", MIXERS)
def test_shapes_dtypes_and_half_autocast(name):
    m = MIXERS[name](num_heads=H, head_dim=D, causal=True)
    q, k, v = (x.float() for x in qkv(9))
    out, _ = m(q, k, v)
    assert out.shape == q.shape and out.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half, _ = m(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()


@pytest.mark.parametrize("name", MIXERS)
def test_clear_errors(name):
    with pytest.raises(ValueError, match="causal=False"):
        MIXERS[name](num_heads=H, head_dim=D, causal=False)
    m = mixer(name)
    q, k, v = qkv(6)
    with pytest.raises(ValueError, match="head_dim"):
        m(q[..., :3], k[..., :3], v[..., :3])
    with pytest.raises(ValueError, match="one shape"):
        m(q, k[:, :, :5], v[:, :, :5])
    with pytest.raises(ValueError, match="key_padding_mask"):
        m(q, k, v, key_padding_mask=torch.ones(2, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="tokens, head_dim"):
        m(q[0], k[0], v[0])


def test_h3_and_hyena_construction_errors():
    with pytest.raises(ValueError, match="even"):
        H3(num_heads=H, head_dim=D, state_size=7)
    with pytest.raises(ValueError, match="ssm_head_dim"):
        H3(num_heads=H, head_dim=D, ssm_head_dim=3)
    with pytest.raises(ValueError, match="odd"):
        Hyena(num_heads=H, head_dim=D, max_len=8, filter_emb_dim=4)


def test_hyena_names_max_len_when_the_sequence_is_longer():
    m = Hyena(num_heads=H, head_dim=D, max_len=8)
    _, state = m(*(x.float() for x in qkv(6)))
    with pytest.raises(ValueError, match="max_len"):
        m(*(x.float() for x in qkv(3)), cache=state)


# --- from the configs, in the small LM ------------------------------------------------------------


def copy_batch(n, half, vocab):
    """Sequences a_1..a_n, 0, a_1..a_n: the second half is predictable only by copying the first."""
    a = torch.randint(1, vocab, (n, half))
    return torch.cat([a, torch.zeros(n, 1, dtype=torch.long), a], dim=1)


@pytest.mark.parametrize("attention", ["h3", "hyena", "h3_hybrid"])
def test_config_builds_a_transformer_lm_whose_loss_falls_on_a_copy_task(attention, tmp_path):
    overrides = [f"attention={attention}", "data.seq_len=16", "model.d_model=32", "model.num_heads=2"]
    cfg = compose_config(overrides, tmp_path)
    lm = instantiate(cfg.model)
    assert isinstance(lm, TransformerLM)
    layers = {"h3": [H3, H3], "hyena": [Hyena, Hyena], "h3_hybrid": [H3, SoftmaxAttention]}[attention]
    assert [type(block.attn) for block in lm.blocks] == layers  # 2 layers: Hybrid H3's softmax in layer 1
    opt = torch.optim.Adam(lm.parameters(), lr=1e-2)
    ids = copy_batch(32, 7, 10)
    losses = []
    for _ in range(30):
        logits, _ = lm(ids[:, :-1])
        loss = F.cross_entropy(logits[:, 7:].flatten(0, 1), ids[:, 8:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    # and the LM decodes through the mixer's state: prefill + steps equal the full forward
    lm.eval()
    with torch.no_grad():
        full, _ = lm(ids[:2])
        logits, caches = lm(ids[:2, :9])
        steps = [logits]
        for t in range(9, ids.shape[1]):
            logits, caches = lm(ids[:2, t : t + 1], caches)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["h3", "hyena"])
def test_converted_gpt2_runs_the_mixer_and_ignores_left_padding(name):
    model = tiny_gpt2()
    convert(model, MIXERS[name])
    ids = torch.randint(1, 100, (1, 12))
    mask = torch.ones(1, 12, dtype=torch.long)
    mask[:, :4] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        alone = model(input_ids=ids[:, 4:], use_cache=False).logits
        padded = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    torch.testing.assert_close(padded[:, 4:], alone, rtol=1e-5, atol=1e-5)


def test_converting_an_encoder_names_the_causal_limit():
    with pytest.raises(ValueError, match="causal=False"):
        convert(tiny_bert(), MIXERS["hyena"])


# --- converted GPT-2: generation from the mixers' state, Hybrid H3's layers ----------------------------


def fresh_gpt2(layers=4):
    """A tiny random GPT-2 (4 layers: Hybrid H3 gets softmax in layers 1 and 3), width 32, 4 heads."""
    config = GPT2Config(
        vocab_size=100, n_embd=32, n_layer=layers, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    config._attn_implementation = "eager"
    return GPT2LMHeadModel(config).eval()


def gpt2_of(name):
    model = fresh_gpt2()
    convert(model, CONVERTED[name])
    return model


CONVERTED = {
    "h3": MIXERS["h3"],
    "h3_elementwise": MIXERS["h3_elementwise"],
    "hyena": MIXERS["hyena"],
    "h3_hybrid": partial(hybrid_h3, shift_size=5),
}


@pytest.mark.parametrize("name", CONVERTED)
def test_converted_gpt2_generates_from_its_state_with_no_cache_passed(name):
    """generate() brings LinearAttentionCache by itself: the same tokens as recomputing every step, and
    the full forward's logits at every generated position."""
    model = gpt2_of(name)
    assert generates_from_state(model)
    ids = torch.randint(1, 100, (2, 6))
    with torch.no_grad():
        cached = greedy(model, ids, output_logits=True)
        uncached = greedy(model, ids, use_cache=False)
        full = model(input_ids=cached.sequences).logits
    assert isinstance(cached.past_key_values, LinearAttentionCache)
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(cached.logits, dim=1), full[:, 5:-1], atol=1e-5, rtol=1e-5)


SPLITS = [(0, 7), (7, 8), (8, 9), (9, 12), (12, 13), (13, 15)]  # prefill 7, then 1, 1, 3, 1, 2 tokens


@pytest.mark.parametrize("name", CONVERTED)
def test_prefill_then_decoding_several_tokens_per_call_matches_the_full_forward(name):
    model = gpt2_of(name)
    ids = torch.randint(1, 100, (2, 15))
    cache = LinearAttentionCache(model)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        steps = [model(input_ids=ids[:, a:b], cache=cache, use_cache=True).logits for a, b in SPLITS]
    assert cache.get_seq_length() == 15 and all(layer.state.offset == 15 for layer in cache.layers)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["h3", "hyena", "h3_hybrid"])
def test_left_padded_batch_generates_what_each_prompt_generates_alone(name):
    """Padding reaches every layer's state: H3 and Hyena zero the padded inputs, Hybrid H3's softmax
    layers keep the padding mask of their past keys (MaskedKVCache) for every later token."""
    model = gpt2_of(name)
    prompts = [torch.randint(1, 100, (n,)) for n in (7, 4, 2)]
    ids = torch.stack([torch.cat([torch.zeros(7 - len(p), dtype=torch.long), p]) for p in prompts])
    mask = (torch.arange(7) >= 7 - torch.tensor([[7], [4], [2]])).long()
    with torch.no_grad():
        batch = greedy(model, ids, attention_mask=mask, output_logits=True)
        if name == "h3_hybrid":
            softmax_state = batch.past_key_values.layers[1].state
            assert isinstance(softmax_state, MaskedKVCache) and softmax_state.key_mask.shape == (3, 16)
            assert torch.equal(softmax_state.key_mask[:, :7], mask.bool())
        for row, prompt in enumerate(prompts):
            alone = greedy(model, prompt[None], output_logits=True)
            assert torch.equal(batch.sequences[row, 7:], alone.sequences[0, len(prompt) :])
            torch.testing.assert_close(
                torch.stack(batch.logits)[:, row], torch.stack(alone.logits)[:, 0], atol=1e-5, rtol=1e-5
            )


@pytest.mark.parametrize("name", ["h3", "hyena", "h3_hybrid"])
def test_beam_search_and_batch_expansion_reorder_the_states(name):
    """Rows of every state field are selected and repeated (Hyena's filter, shared by all rows, is kept)."""
    repeated = check_reorder_and_repeat(gpt2_of(name), beam_cache=False)
    if name == "hyena":
        assert all(isinstance(layer.state, HyenaState) for layer in repeated.layers)
        assert all(layer.state.filter.shape == (32, 64) for layer in repeated.layers)  # (channels, max_len)


def test_h3_state_is_fixed_and_hyena_state_grows_by_one_input_per_token():
    """nbytes: H3's state is the same after 16 and 48 tokens; Hyena keeps every long-convolution input
    (channels float32 values per token, layer and row), so its next token costs O(T)."""
    sizes = {}
    for name in ("h3", "hyena"):
        model = gpt2_of(name)
        cache = LinearAttentionCache(model)
        ids = torch.randint(1, 100, (2, 48))
        with torch.no_grad():
            model(input_ids=ids[:, :16], cache=cache, use_cache=True)
            after_16 = cache.nbytes()
            for t in range(16, 48):
                model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
        sizes[name] = (after_16, cache.nbytes())
        assert all(layer.keys is None and layer.values is None for layer in cache.layers)
    assert sizes["h3"][0] == sizes["h3"][1]
    layers, rows, channels = 4, 2, 32
    assert sizes["hyena"][1] - sizes["hyena"][0] == layers * rows * channels * 4 * 32


def test_a_mixed_model_refuses_past_keys_and_softmax_alone_keeps_the_key_cache():
    hybrid = gpt2_of("h3_hybrid")
    ids = torch.randint(1, 100, (1, 6))
    with (
        torch.no_grad(),
        pytest.raises(ValueError, match=r"H3 layer .*pass cache=LinearAttentionCache\(model\)"),
    ):
        hybrid.generate(ids, max_new_tokens=3, do_sample=False, cache=DynamicCache())
    softmax = tiny_gpt2()
    convert(softmax, SoftmaxAttention)
    assert not generates_from_state(softmax) and "generate" not in softmax.__dict__
    with pytest.raises(ValueError, match="every converted layer is SoftmaxAttention"):
        LinearAttentionCache(softmax)


@pytest.mark.parametrize("name", ["h3", "hyena", "h3_hybrid"])
def test_mixers_have_no_feature_maps_to_distil(name):
    """Stage 1 has nothing to train: no feature-map parameters (ConversionTask then skips it), and the
    distillation loss names why."""
    model = gpt2_of(name)
    assert feature_map_parameters(model) == {}
    set_stage(model, "distill")
    with torch.no_grad():
        model(input_ids=torch.randint(1, 100, (1, 8)))
    with pytest.raises(ValueError, match="no converted layer has any"):
        distillation_losses(model)


# --- layer index and Hybrid H3's placement ---------------------------------------------------------------


def test_build_attention_hands_the_layer_index_only_to_constructors_that_name_it():
    seen = []

    def per_layer(num_heads, head_dim, causal, layer_index, num_layers):
        seen.append((layer_index, num_layers))
        return SoftmaxAttention(num_heads=num_heads, head_dim=head_dim, causal=causal)

    convert(fresh_gpt2(layers=3), per_layer)
    assert seen == [(0, 3), (1, 3), (2, 3)]
    lm = TransformerLM(vocab_size=10, d_model=8, num_layers=2, num_heads=2, max_len=8, attention=per_layer)
    assert seen[3:] == [(0, 2), (1, 2)] and len(lm.blocks) == 2
    # every other constructor is called exactly as before (SoftmaxAttention takes no layer index)
    plain = build_attention(
        SoftmaxAttention, num_heads=2, head_dim=4, causal=True, layer_index=5, num_layers=9
    )
    assert isinstance(plain, SoftmaxAttention)


def test_hybrid_h3_puts_softmax_in_the_second_layer_and_two_thirds_up():
    assert hybrid_attention_layers(12) == (1, 8)  # the H3 code's 125M configs: attn_layer_idx [1, 8]
    assert hybrid_attention_layers(24) == (1, 16)
    assert hybrid_attention_layers(6) == (1, 4) and hybrid_attention_layers(4) == (1, 3)
    assert hybrid_attention_layers(2) == (1,)
    layers = [type(layer.attention) for layer in converted_layers(gpt2_of("h3_hybrid"))]
    assert layers == [H3, SoftmaxAttention, H3, SoftmaxAttention]
    explicit = [
        type(hybrid_h3(num_heads=H, head_dim=D, layer_index=i, num_layers=4, attention_layers=[0]))
        for i in range(4)
    ]
    assert explicit == [SoftmaxAttention, H3, H3, H3]
    with pytest.raises(ValueError, match="outside"):
        hybrid_h3(num_heads=H, head_dim=D, layer_index=0, num_layers=4, attention_layers=[1, 8])
    with pytest.raises(ValueError, match="one-layer"):
        hybrid_h3(num_heads=H, head_dim=D, layer_index=0, num_layers=1)


def test_hybrid_config_builds_the_gpt2_of_the_experiment():
    cfg = compose(["experiment=gpt2_wt103", "attention=h3_hybrid"])
    model = instantiate(cfg.model)
    layers = converted_layers(model)
    assert [type(layer.attention) for layer in layers] == [H3, SoftmaxAttention, H3, SoftmaxAttention]
    assert layers[0].attention.ssm_head_dim == 1  # the elementwise H3 of the H3 code's WikiText-103 config


@pytest.mark.parametrize("attention", ["h3", "hyena", "h3_hybrid"])
def test_conversion_run_of_a_mixer_skips_stage_1(attention, tmp_path):
    """experiment=gpt2_convert with a mixer trains end to end: stage 1 has no feature maps, so it is skipped."""
    cfg = compose_config(["experiment=gpt2_convert", f"attention={attention}", *TINY], tmp_path)
    record = train(cfg)
    assert record["attention"] == attention
    assert record["metrics"]["test/distill_steps"] == 0
    assert torch.isfinite(torch.tensor(record["metrics"]["test/ppl"]))
