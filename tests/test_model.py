"""The small LM: every attention plugs in; prefill + decode equals the full forward."""

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
from hedgehog.models import TransformerLM

ATTENTIONS = {
    "softmax": SoftmaxAttention,
    "hedgehog": partial(LinearAttention, feature_map=HedgehogFeatureMap, chunk_size=8),
    "hedgehog_exp": partial(
        LinearAttention, feature_map=partial(HedgehogFeatureMap, activation="exp"), chunk_size=8
    ),
    "elu1": partial(LinearAttention, feature_map=Elu1FeatureMap, chunk_size=8),
    "taylor2": partial(LinearAttention, feature_map=Taylor2FeatureMap, chunk_size=8),
    "performer": partial(LinearAttention, feature_map=partial(PerformerFeatureMap, seed=0), chunk_size=8),
    "cosformer": partial(LinearAttention, feature_map=partial(CosFormerFeatureMap, max_len=32), chunk_size=8),
}


def model(attention, max_len=32, **kwargs):
    return TransformerLM(
        vocab_size=50, d_model=32, num_layers=2, num_heads=4, max_len=max_len, attention=attention, **kwargs
    ).eval()


@pytest.mark.parametrize("name", ATTENTIONS)
def test_prefill_then_decode_equals_full_forward(name):
    lm = model(ATTENTIONS[name])
    ids = torch.randint(0, 50, (2, 21))
    with torch.no_grad():
        full, _ = lm(ids)
        logits, caches = lm(ids[:, :13])
        steps = [logits]
        for t in range(13, 21):
            logits, caches = lm(ids[:, t : t + 1], caches)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ATTENTIONS)
def test_forward_backward(name):
    lm = model(ATTENTIONS[name]).train()
    ids = torch.randint(0, 50, (2, 16))
    logits, _ = lm(ids)
    logits.sum().backward()
    assert all(p.grad is not None for p in lm.parameters() if p.requires_grad)


def test_linear_state_does_not_grow_while_kv_cache_does():
    ids = torch.randint(0, 50, (1, 30))
    with torch.no_grad():
        _, linear = model(ATTENTIONS["hedgehog"])(ids)
        _, soft = model(ATTENTIONS["softmax"])(ids)
    assert linear[0].kv.shape[-2:] == (16, 8)  # F x D, whatever the length
    assert soft[0].k.shape[-2] == 30


def test_too_long_input_names_max_len():
    with pytest.raises(ValueError, match="max_len"):
        model(ATTENTIONS["softmax"], max_len=8)(torch.zeros(1, 9, dtype=torch.long))


def test_default_init_is_pytorchs_with_an_untied_head():
    """The recipe that trains associative recall: PyTorch's init (embeddings N(0, 1)), an untied head;
    init_std and tie_head give GPT-2's (N(0, 0.02^2), zero biases, the head sharing the embedding)."""
    torch.manual_seed(0)
    lm = TransformerLM(
        vocab_size=500, d_model=64, num_layers=2, num_heads=1, max_len=32, attention=SoftmaxAttention
    )
    assert lm.head.weight is not lm.embed.weight
    assert 0.9 < lm.embed.weight.std() < 1.1
    qkv = lm.blocks[0].qkv
    assert qkv.weight.abs().max() <= 64**-0.5 and qkv.bias.abs().max() > 0
    gpt2 = TransformerLM(
        vocab_size=500,
        d_model=64,
        num_layers=2,
        num_heads=1,
        max_len=32,
        attention=SoftmaxAttention,
        tie_head=True,
        init_std=0.02,
    )
    assert gpt2.head.weight is gpt2.embed.weight
    assert 0.018 < gpt2.embed.weight.std() < 0.022 and 0.018 < gpt2.blocks[0].qkv.weight.std() < 0.022
    assert (gpt2.blocks[0].qkv.bias == 0).all()


def test_head_on_selected_positions_gives_the_same_loss_and_gradients():
    """TransformerLM's ``select`` computes the head only where labels are (MQAR's queries); the task's loss,
    accuracy and gradients equal those of the full logits."""
    from hedgehog.data.loading import IGNORE_INDEX
    from hedgehog.tasks.language_modeling import LanguageModelingTask, next_token_loss

    torch.manual_seed(0)
    model = TransformerLM(500, 32, 2, 2, 24, partial(LinearAttention, feature_map=HedgehogFeatureMap))
    ids = torch.randint(0, 500, (3, 24))
    labels = torch.full((3, 24), IGNORE_INDEX)
    labels[:, [5, 9, 17]] = torch.randint(0, 500, (3, 3))
    select = labels != IGNORE_INDEX
    full, _ = model(ids)
    part, _ = model(ids, select=select)
    assert part.shape == (9, 500) and torch.allclose(part, full[select], atol=1e-6)
    ref_loss, ref_tokens = next_token_loss(full, labels)
    ref_grads = torch.autograd.grad(ref_loss, list(model.parameters()))
    task = LanguageModelingTask(model, partial(torch.optim.AdamW, lr=1e-3))
    task.log = lambda *args, **kwargs: None
    loss = task._step((ids, labels), "train")
    assert torch.allclose(loss, ref_loss, atol=1e-6) and ref_tokens == 9
    for g, r in zip(torch.autograd.grad(loss, list(model.parameters())), ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-6)


def test_mlp_ratio_zero_gives_attention_only_blocks():
    """zoology's MQAR models have no MLP: mlp_ratio 0 drops it (and its norm), and the block is then the
    residual attention alone; a negative ratio is refused."""
    lm = model(SoftmaxAttention, mlp_ratio=0)
    assert not any("mlp" in name for name, _ in lm.named_parameters())
    block = lm.blocks[0]
    x = torch.randn(2, 7, 32)
    q, k, v = block.qkv(block.ln_attn(x)).view(2, 7, 3, 4, 8).permute(2, 0, 3, 1, 4)
    y, _ = block.attn(q, k, v)
    expected = x + block.out(y.transpose(1, 2).reshape(2, 7, 32))
    torch.testing.assert_close(block(x)[0], expected)
    with pytest.raises(ValueError, match="mlp_ratio"):
        model(SoftmaxAttention, mlp_ratio=-1)
