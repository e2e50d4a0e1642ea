"""LinearAttentionCache: generation of converted linear models from the fixed-size state (tiny random models)."""

from functools import partial

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from hedgehog.attention import Elu1FeatureMap, HedgehogFeatureMap, LinearAttention, SoftmaxAttention
from hedgehog.models.cache import LinearAttentionCache
from hedgehog.models.conversion import convert, revert, set_stage
from tests.test_conversion import SMALL, tiny_gpt2


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=100,
        num_key_value_heads=2,  # grouped-query attention, RoPE before the attention function
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        attn_implementation="eager",
        **SMALL,
    )
    return LlamaForCausalLM(config).eval()


MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def linear_model(family: str, feature_map=HedgehogFeatureMap):
    model = MODELS[family]()
    convert(model, partial(LinearAttention, feature_map=feature_map))
    return model


def greedy(model, ids, **kwargs):
    return model.generate(
        ids, max_new_tokens=10, do_sample=False, pad_token_id=0, return_dict_in_generate=True, **kwargs
    )


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("feature_map", [HedgehogFeatureMap, Elu1FeatureMap])
def test_greedy_generation_from_the_state_matches_the_full_forward(family, feature_map):
    model = linear_model(family, feature_map)
    ids = torch.randint(1, 100, (2, 6))
    with torch.no_grad():
        cached = greedy(model, ids, cache=LinearAttentionCache(model), output_logits=True)
        uncached = greedy(model, ids, use_cache=False)
        full = model(input_ids=cached.sequences).logits
    assert torch.equal(cached.sequences, uncached.sequences)
    torch.testing.assert_close(torch.stack(cached.logits, dim=1), full[:, 5:-1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", MODELS)
def test_generate_picks_the_state_cache_by_itself(family):
    """A converted linear model decodes from its fixed-size state with no cache passed: the same tokens
    and logits as with an explicit LinearAttentionCache, and the full forward's logits."""
    model = linear_model(family)
    ids = torch.randint(1, 100, (2, 6))
    with torch.no_grad():
        default = greedy(model, ids, output_logits=True)
        explicit = greedy(model, ids, cache=LinearAttentionCache(model), output_logits=True)
        full = model(input_ids=default.sequences).logits
    assert isinstance(default.past_key_values, LinearAttentionCache)
    assert torch.equal(default.sequences, explicit.sequences)
    torch.testing.assert_close(torch.stack(default.logits, dim=1), full[:, 5:-1], atol=1e-5, rtol=1e-5)
    revert(model)
    assert "generate" not in model.__dict__


@pytest.mark.parametrize("family", MODELS)
def test_prefill_then_decoding_several_tokens_per_call_matches_the_full_forward(family):
    model = linear_model(family)
    ids = torch.randint(1, 100, (2, 15))
    cache = LinearAttentionCache(model)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        steps = [model(input_ids=ids[:, a:b], cache=cache, use_cache=True).logits for a, b in SPLITS]
    assert cache.get_seq_length() == 15
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


SPLITS = [(0, 7), (7, 8), (8, 9), (9, 12), (12, 13), (13, 15)]  # prefill 7, then 1, 1, 3, 1, 2 tokens


def test_the_state_does_not_grow_with_the_context():
    model = linear_model("gpt2")
    cache = LinearAttentionCache(model)
    ids = torch.randint(1, 100, (1, 64))
    with torch.no_grad():
        model(input_ids=ids[:, :16], cache=cache, use_cache=True)
        after_16 = [tuple(t.shape for t in layer.state[:2]) for layer in cache.layers]
        bytes_16 = cache.nbytes()
        for t in range(16, 64):
            model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True)
    after_64 = [tuple(t.shape for t in layer.state[:2]) for layer in cache.layers]
    heads, feature_dim, head_dim = 4, 16, 8  # Hedgehog: F = 2 * head_dim
    assert after_16 == after_64 == [((1, heads, feature_dim, head_dim), (1, heads, feature_dim))] * 2
    assert cache.nbytes() == bytes_16 == 2 * 4 * heads * feature_dim * (head_dim + 1)
    assert cache.get_seq_length() == 64
    assert all(layer.keys is None and layer.values is None for layer in cache.layers)


@pytest.mark.parametrize("family", MODELS)
def test_left_padded_batch_generates_what_each_prompt_generates_alone(family):
    model = linear_model(family)
    prompts = [torch.randint(1, 100, (n,)) for n in (7, 4, 2)]
    ids = torch.stack([torch.cat([torch.zeros(7 - len(p), dtype=torch.long), p]) for p in prompts])
    mask = (torch.arange(7) >= 7 - torch.tensor([[7], [4], [2]])).long()
    with torch.no_grad():
        batch = greedy(model, ids, attention_mask=mask, cache=LinearAttentionCache(model), output_logits=True)
        for row, prompt in enumerate(prompts):
            alone = greedy(model, prompt[None], cache=LinearAttentionCache(model), output_logits=True)
            assert torch.equal(batch.sequences[row, 7:], alone.sequences[0, len(prompt) :])
            torch.testing.assert_close(
                torch.stack(batch.logits)[:, row], torch.stack(alone.logits)[:, 0], atol=1e-5, rtol=1e-5
            )


def check_reorder_and_repeat(model, compare_states=None, beam_cache: bool = True) -> LinearAttentionCache:
    """A cache reordered (beam search) or repeated (batch expansion) after a prompt continues as a cache
    filled from the reordered or repeated prompt, and beam search from the state matches it without a
    cache. ``compare_states(reordered, fresh)`` may check the states themselves before the next token;
    ``beam_cache`` passes a fresh LinearAttentionCache to beam search (else the model's generate brings its
    own). Returns the repeated cache after its next token."""
    ids = torch.randint(1, 100, (3, 5))
    order = torch.tensor([2, 0, 0])
    reordered, repeated = LinearAttentionCache(model), LinearAttentionCache(model)
    fresh, fresh_repeated = LinearAttentionCache(model), LinearAttentionCache(model)
    with torch.no_grad():
        model(input_ids=ids, cache=reordered, use_cache=True)
        reordered.reorder_cache(order)
        model(input_ids=ids[order], cache=fresh, use_cache=True)
        model(input_ids=ids, cache=repeated, use_cache=True)
        repeated.batch_repeat_interleave(2)
        model(input_ids=ids.repeat_interleave(2, dim=0), cache=fresh_repeated, use_cache=True)
        if compare_states is not None:
            for a, b in ((reordered, fresh), (repeated, fresh_repeated)):
                compare_states(a, b)
        nxt = torch.randint(1, 100, (6, 1))
        a = model(input_ids=nxt[:3], cache=reordered, use_cache=True).logits
        b = model(input_ids=nxt[:3], cache=fresh, use_cache=True).logits
        c = model(input_ids=nxt, cache=repeated, use_cache=True).logits
        d = model(input_ids=nxt, cache=fresh_repeated, use_cache=True).logits
        extra = {"cache": LinearAttentionCache(model)} if beam_cache else {}
        beams = greedy(model, ids[:2], num_beams=3, **extra).sequences
        uncached = greedy(model, ids[:2], num_beams=3, use_cache=False).sequences
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(c, d, atol=1e-6, rtol=1e-6)
    assert torch.equal(beams, uncached)
    return repeated


def test_beam_search_and_batch_expansion_reorder_the_states():
    check_reorder_and_repeat(linear_model("gpt2"))


def test_unsupported_uses_raise_clear_errors():
    softmax = tiny_gpt2()
    convert(softmax, SoftmaxAttention)
    with pytest.raises(ValueError, match="every converted layer is SoftmaxAttention"):
        LinearAttentionCache(softmax)
    with pytest.raises(ValueError, match="not converted"):
        LinearAttentionCache(tiny_gpt2())

    model = linear_model("gpt2")
    ids = torch.randint(1, 100, (1, 6))
    with torch.no_grad(), pytest.raises(ValueError, match=r"pass cache=LinearAttentionCache\(model\)"):
        model.generate(ids, max_new_tokens=3, do_sample=False, cache=DynamicCache())
    cache = LinearAttentionCache(model)
    with torch.no_grad():
        model(input_ids=ids, cache=cache, use_cache=True)
    with pytest.raises(NotImplementedError, match="cannot be cropped"):
        cache.crop(-1)
    set_stage(model, "distill")
    with torch.no_grad(), pytest.raises(RuntimeError, match="set_stage\\(model, 'finetune'\\)"):
        model(input_ids=ids[:, :1], cache=cache, use_cache=True)
