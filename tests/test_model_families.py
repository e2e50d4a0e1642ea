"""Every decoder family ``convert`` accepts: softmax parity and state-cache decoding (tiny random models)."""

from functools import partial

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from hedgehog.attention import HedgehogFeatureMap, LinearAttention, SoftmaxAttention
from hedgehog.models.cache import LinearAttentionCache
from hedgehog.models.conversion import ATTENTION_CLASSES, attention_modules, convert, revert

TINY = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention
    intermediate_size=64,
    max_position_embeddings=128,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)
# model_type -> what its tiny config sets beyond TINY. Gemma-2/3 and Granite scale scores other than
# by 1/sqrt(head_dim) (query_pre_attn_scalar, attention_multiplier); Gemma-3 and Ministral have
# sliding-window layers (windows longer than these tests' sequences).
DECODERS: dict[str, dict] = {
    "llama": {},
    "mistral": {},
    "ministral": {"head_dim": 8, "sliding_window": 64},
    "qwen2": {},
    "qwen3": {"head_dim": 8},
    "gemma": {"head_dim": 8},
    "gemma2": {"head_dim": 8, "query_pre_attn_scalar": 16, "attn_logit_softcapping": None},
    "gemma3_text": {"head_dim": 8, "query_pre_attn_scalar": 16, "sliding_window": 64},
    "phi3": {},  # one fused qkv_proj
    "phi": {},  # partial rotary, q/k/v/dense
    "olmo": {},
    "olmo2": {},  # q/k norms over all heads
    "granite": {"attention_multiplier": 0.3},
    "starcoder2": {},
    "stablelm": {},
    "cohere": {},
    "smollm3": {},
}
ENCODERS_AND_GPT2 = {"bert", "roberta", "xlm-roberta", "electra", "gpt2", "vit"}  # tests/test_conversion.py


def tiny_decoder(family: str, **overrides) -> PreTrainedModel:
    config = AutoConfig.for_model(family, **{**TINY, **DECODERS[family], **overrides})
    config._attn_implementation = "eager"
    return AutoModelForCausalLM.from_config(config).eval()


def test_every_family_conversion_accepts_is_tested():
    assert set(ATTENTION_CLASSES) == set(DECODERS) | ENCODERS_AND_GPT2


@pytest.mark.parametrize("family", DECODERS)
def test_softmax_conversion_reproduces_the_original_logits(family):
    model = tiny_decoder(family)
    ids = torch.randint(1, 100, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
        assert len(convert(model, SoftmaxAttention)) == 2
        converted = model(input_ids=ids, attention_mask=mask).logits
        revert(model)
        reverted = model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(converted[real], reference[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reverted, reference, atol=0, rtol=0)


@pytest.mark.parametrize("family", DECODERS)
def test_linear_prefill_and_decoding_from_the_state_equal_the_full_forward(family):
    model = tiny_decoder(family)
    convert(model, partial(LinearAttention, feature_map=HedgehogFeatureMap))
    ids = torch.randint(1, 100, (2, 10))
    cache = LinearAttentionCache(model)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        steps = [model(input_ids=ids[:, a:b], cache=cache, use_cache=True).logits for a, b in SPLITS]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


SPLITS = [(0, 6), (6, 7), (7, 10)]  # prefill 6, then 1 and 3 tokens


def test_families_scaling_scores_differently_are_the_ones_the_parity_test_covers():
    """The parity above holds for Gemma-2/3 and Granite because the converted layer rescales q."""
    for family in ("gemma2", "gemma3_text", "granite"):
        module = next(m for _, m in attention_modules(tiny_decoder(family)))
        assert abs(module.scaling - module.head_dim**-0.5) > 0.01, family


def test_gemma2_soft_capping_is_rejected_clearly():
    model = tiny_decoder("gemma2", attn_logit_softcapping=50.0)
    with pytest.raises(
        ValueError, match=r"soft-caps its attention scores .* cap = 50.0.*attn_logit_softcapping=None"
    ):
        convert(model, SoftmaxAttention)


@pytest.mark.parametrize("family", ["mistral", "qwen2", "gemma3_text"])
def test_sliding_windows_hold_up_to_the_window_and_raise_beyond(family):
    window = 4
    extra = {"use_sliding_window": True, "max_window_layers": 0} if family == "qwen2" else {}
    model = tiny_decoder(family, sliding_window=window, **extra)
    ids = torch.randint(1, 100, (1, 6))
    with torch.no_grad():
        reference = model(input_ids=ids[:, :window]).logits
        convert(model, SoftmaxAttention)
        torch.testing.assert_close(model(input_ids=ids[:, :window]).logits, reference, atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match=r"sliding window of 4 tokens.*got 6"):
            model(input_ids=ids)
        revert(model)
        convert(model, partial(LinearAttention, feature_map=HedgehogFeatureMap))
        cache = LinearAttentionCache(model)
        model(input_ids=ids[:, :window], cache=cache, use_cache=True)
        with pytest.raises(ValueError, match=r"sliding window of 4 tokens.*got 5"):
            model(input_ids=ids[:, window : window + 1], cache=cache, use_cache=True)
