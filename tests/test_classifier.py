"""The LRA classifier: shapes, padding kept out of attention and pooling, the non-causal block, the pair head."""

import math
from functools import partial

import pytest
import torch

from hedgehog.attention import (
    CosFormerFeatureMap,
    Elu1FeatureMap,
    HedgehogFeatureMap,
    LinearAttention,
    PerformerFeatureMap,
    SoftmaxAttention,
    Taylor2FeatureMap,
)
from hedgehog.models import TransformerClassifier
from hedgehog.models.lm import Block

MAX_LEN = 24
ATTENTIONS = {
    "softmax": SoftmaxAttention,
    "hedgehog": partial(LinearAttention, feature_map=HedgehogFeatureMap),
    "elu1": partial(LinearAttention, feature_map=Elu1FeatureMap),
    "taylor2": partial(LinearAttention, feature_map=Taylor2FeatureMap),
    "performer": partial(LinearAttention, feature_map=partial(PerformerFeatureMap, seed=0)),
    "cosformer": partial(LinearAttention, feature_map=partial(CosFormerFeatureMap, max_len=MAX_LEN)),
}


def classifier(attention, pairs: bool = False) -> TransformerClassifier:
    model = TransformerClassifier(
        vocab_size=20, num_labels=5, d_model=16, num_layers=2, num_heads=2, max_len=MAX_LEN,
        attention=attention, pairs=pairs,
    )  # fmt: skip
    return model.double().eval()


@pytest.mark.parametrize("name", ATTENTIONS)
def test_logits_shape_and_gradients(name):
    model = classifier(ATTENTIONS[name]).train()
    ids = torch.randint(1, 20, (3, 11))
    logits = model(ids, torch.ones_like(ids))
    assert logits.shape == (3, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ATTENTIONS)
def test_padding_changes_nothing(name):
    """Padded keys are left out of attention and padded positions out of the mean: a sequence scores the
    same alone, padded, and with anything in its padding."""
    model = classifier(ATTENTIONS[name])
    ids = torch.randint(1, 20, (2, 9))
    padded = torch.cat([ids, torch.randint(0, 20, (2, 7))], dim=1)
    mask = torch.cat([torch.ones(2, 9), torch.zeros(2, 7)], dim=1).long()
    other = padded.clone()
    other[:, 9:] = torch.randint(0, 20, (2, 7))
    with torch.no_grad():
        alone = model(ids)
        torch.testing.assert_close(model(padded, mask), alone, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model(other, mask), alone, rtol=1e-10, atol=1e-10)
        assert not torch.allclose(model(padded), alone)  # without the mask the padding is read


def test_mean_pooling_over_real_tokens():
    model = classifier(ATTENTIONS["elu1"])
    ids = torch.randint(1, 20, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    with torch.no_grad():
        pooled = model.encode(ids, mask)
        x = model.embed(ids) + model.pos(torch.arange(10))
        for block in model.blocks:
            x, _ = block(x, key_padding_mask=mask.bool())
        states = model.ln_f(x)
    torch.testing.assert_close(pooled[0], states[0].mean(0))
    torch.testing.assert_close(pooled[1], states[1, :4].mean(0))


def test_noncausal_block_is_full_softmax_attention():
    """The encoder's block computes LN -> unmasked multi-head softmax attention -> residual, then the MLP."""
    torch.manual_seed(0)
    block = Block(16, 4, SoftmaxAttention, mlp_ratio=2, dropout=0.0, causal=False).double()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    out, _ = block(x)
    q, k, v = block.qkv(block.ln_attn(x)).view(2, 7, 3, 4, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)  # every key, no causal mask
    h = x + block.out((weights @ v).transpose(1, 2).reshape(2, 7, 16))
    torch.testing.assert_close(out, h + block.mlp(block.ln_mlp(h)))


@pytest.mark.parametrize("name", ["softmax", "hedgehog", "cosformer"])
def test_noncausal_block_sees_later_tokens(name):
    torch.manual_seed(0)
    x = torch.randn(1, 8, 16)
    later = x.clone()
    later[:, -1] += 1.0
    for causal in (False, True):
        block = Block(16, 2, ATTENTIONS[name], mlp_ratio=2, dropout=0.0, causal=causal)
        assert block.attn.causal == causal
        with torch.no_grad():
            first, second = block(x)[0][:, 0], block(later)[0][:, 0]
        assert torch.equal(first, second) == causal


def test_pair_head_reads_both_documents():
    model = classifier(ATTENTIONS["hedgehog"], pairs=True)
    a, b = torch.randint(1, 20, (2, 9)), torch.randint(1, 20, (2, 12))
    mask_a, mask_b = torch.ones_like(a), torch.ones_like(b)
    mask_b[0, 6:] = 0
    with torch.no_grad():
        logits = model(a, mask_a, b, mask_b)
        x1, x2 = model.encode(a, mask_a), model.encode(b, mask_b)
        expected = model.head(torch.cat([x1, x2, x1 * x2, x1 - x2], dim=-1))
        swapped = model(b, mask_b, a, mask_a)
    torch.testing.assert_close(logits, expected)
    assert logits.shape == (2, 5)
    assert not torch.allclose(logits, swapped)  # x1 - x2: the order of the documents matters


def test_pairs_setting_must_match_the_inputs():
    ids = torch.randint(1, 20, (2, 5))
    with pytest.raises(ValueError, match="pairs=True"):
        classifier(SoftmaxAttention, pairs=True)(ids)
    with pytest.raises(ValueError, match="pairs=False"):
        classifier(SoftmaxAttention)(ids, None, ids)


def test_too_long_and_empty_sequences_raise():
    model = classifier(SoftmaxAttention)
    with pytest.raises(ValueError, match="max_len=24"):
        model(torch.randint(1, 20, (1, MAX_LEN + 1)))
    with pytest.raises(ValueError, match="at least one real token"):
        model(torch.randint(1, 20, (2, 5)), torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]))


def test_init_std_draws_every_weight_or_keeps_pytorch_defaults():
    def build(init_std):
        torch.manual_seed(0)
        return TransformerClassifier(
            vocab_size=500, num_labels=5, d_model=64, num_layers=1, num_heads=2, max_len=MAX_LEN,
            attention=SoftmaxAttention, init_std=init_std,
        )  # fmt: skip

    gpt2_like, default = build(0.02), build(None)
    # GPT-2's 0.02 everywhere; PyTorch's N(0, 1) embeddings and uniform(+-1/sqrt(fan_in)) linear layers
    assert gpt2_like.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert default.embed.weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert default.head[0].weight.std().item() == pytest.approx(1 / math.sqrt(3 * 64), rel=0.1)
    assert gpt2_like.head[0].bias.abs().max().item() == 0.0
