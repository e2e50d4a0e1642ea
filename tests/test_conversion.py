"""Conversion of Hugging Face models: parity with softmax, reversibility, causality, stages (tiny random models)."""

from functools import partial

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)

from hedgehog.attention import (
    Elu1FeatureMap,
    HedgehogFeatureMap,
    LinearAttention,
    PerformerFeatureMap,
    SoftmaxAttention,
    T2RFeatureMap,
)
from hedgehog.models.conversion import (
    CHILD,
    convert,
    converted_layers,
    distillation_losses,
    feature_map_parameters,
    feature_map_state_dict,
    load_feature_maps,
    revert,
    set_stage,
)
from hedgehog.models.pretrained import causal_lm, image_classifier, load_tokenizer, pretrained_path
from hedgehog.models.saving import fingerprint
from hedgehog.paths import cache_dir

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def tiny_bert(num_labels: int = 3) -> BertForSequenceClassification:
    config = BertConfig(vocab_size=100, num_labels=num_labels, attn_implementation="eager", **SMALL)
    return BertForSequenceClassification(config).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    config._attn_implementation = "eager"
    return GPT2LMHeadModel(config).eval()


def padded_batch(batch: int = 3, length: int = 10) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def hedgehog_attention():
    return partial(LinearAttention, feature_map=HedgehogFeatureMap)


def _tiny_models():
    ids = torch.randint(1, 100, (2, 9))
    return {
        "bert": (tiny_bert, padded_batch()),
        "roberta": (
            lambda: RobertaForSequenceClassification(
                RobertaConfig(vocab_size=100, attn_implementation="eager", **SMALL)
            ).eval(),
            {"input_ids": ids.clamp(max=97) + 2, "attention_mask": torch.ones_like(ids)},
        ),
        "gpt2": (tiny_gpt2, padded_batch()),
        "vit": (
            lambda: ViTForImageClassification(
                ViTConfig(image_size=16, patch_size=4, num_channels=1, attn_implementation="eager", **SMALL)
            ).eval(),
            {"pixel_values": torch.randn(2, 1, 16, 16)},
        ),
        "llama": (  # grouped-query attention, RoPE before the attention function
            lambda: LlamaForCausalLM(
                LlamaConfig(vocab_size=100, num_key_value_heads=2, attn_implementation="eager", **SMALL)
            ).eval(),
            {"input_ids": ids},
        ),
    }


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "vit", "llama"])
def test_softmax_conversion_reproduces_logits_and_reverts(family):
    build, inputs = _tiny_models()[family]
    model = build()
    with torch.no_grad():
        reference = model(**inputs).logits
        names = convert(model, SoftmaxAttention)
        assert len(names) == 2
        converted = model(**inputs).logits
        revert(model)
        reverted = model(**inputs).logits
    keep = inputs["attention_mask"].bool() if family == "gpt2" else ...
    torch.testing.assert_close(converted[keep], reference[keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reverted, reference, atol=0, rtol=0)
    assert not any("converted_attention" in n for n, _ in model.named_modules())


VIT = dict(image_size=16, patch_size=4, num_channels=1, **SMALL)


def test_image_classifier_from_the_teacher_weights_reproduces_the_teacher(tmp_path):
    """The softmax ViT a teacher run saves, rebuilt by image_classifier: converted to softmax it gives the
    teacher's logits; converted to Hedgehog (non-causal) its distill stage outputs them too, and its
    finetune stage, linear attention, does not."""
    teacher = image_classifier(SoftmaxAttention, num_labels=10, config=VIT).eval()
    pixels = torch.randn(3, 1, 16, 16)
    weights = tmp_path / "teacher.pt"
    torch.save({k: v for k, v in teacher.state_dict().items() if f".{CHILD}." not in k}, weights)
    plain = ViTForImageClassification(ViTConfig(**VIT, num_labels=10, attn_implementation="eager")).eval()
    plain.load_state_dict(torch.load(weights, weights_only=True))
    softmax = image_classifier(SoftmaxAttention, num_labels=10, config=VIT, weights=str(weights)).eval()
    hedgehog = image_classifier(hedgehog_attention(), num_labels=10, config=VIT, weights=str(weights)).eval()
    assert all(not layer.causal for layer in converted_layers(hedgehog))
    with torch.no_grad():
        reference = plain(pixel_values=pixels).logits
        torch.testing.assert_close(teacher(pixel_values=pixels).logits, reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(softmax(pixel_values=pixels).logits, reference, atol=1e-5, rtol=1e-5)
        set_stage(hedgehog, "distill")
        torch.testing.assert_close(hedgehog(pixel_values=pixels).logits, reference, atol=1e-5, rtol=1e-5)
        losses = torch.stack(distillation_losses(hedgehog))
        set_stage(hedgehog, "finetune")
        linear = hedgehog(pixel_values=pixels).logits
    assert losses.shape == (2,) and torch.isfinite(losses).all() and (losses > 0).all()
    assert (linear - reference).abs().max() > 1e-4


def test_image_classifier_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"set model\.max_len to 17"):
        image_classifier(SoftmaxAttention, num_labels=10, config=VIT, max_len=16)
    with pytest.raises(ValueError, match="pass one"):
        image_classifier(
            SoftmaxAttention, num_labels=10, pretrained="google/vit-base-patch16-224", config=VIT
        )
    with pytest.raises(ValueError, match="either `pretrained`"):
        image_classifier(SoftmaxAttention, num_labels=10)
    with pytest.raises(FileNotFoundError, match="vit_imagenet_teacher"):
        image_classifier(SoftmaxAttention, num_labels=10, config=VIT, weights=str(tmp_path / "missing.pt"))


def test_conversion_keeps_pretrained_weights_and_adds_only_feature_maps():
    model = tiny_bert()
    before = {n: p.clone() for n, p in model.named_parameters()}
    convert(model, hedgehog_attention())
    after = dict(model.named_parameters())
    added = set(after) - set(before)
    assert added == set(feature_map_parameters(model))
    assert all(torch.equal(after[n], p) for n, p in before.items())


def test_converted_bert_runs_forward_backward_with_padding():
    model = tiny_bert()
    convert(model, partial(LinearAttention, feature_map=Elu1FeatureMap))
    model.train()
    batch = padded_batch()
    out = model(**batch, labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is not None


def test_padding_does_not_change_real_tokens_of_linear_bert():
    model = tiny_bert()
    convert(model, hedgehog_attention())
    ids = torch.randint(1, 100, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        short = model.bert(input_ids=ids).last_hidden_state
        long = model.bert(input_ids=padded, attention_mask=mask).last_hidden_state[:, :6]
    torch.testing.assert_close(long, short, atol=1e-5, rtol=1e-5)


def test_causal_gpt2_linear_prefix_is_independent_of_later_tokens():
    model = tiny_gpt2()
    convert(model, hedgehog_attention())
    ids = torch.randint(1, 100, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 100
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=changed).logits
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=1e-6, rtol=1e-6)
    assert (a[:, 7:] - b[:, 7:]).abs().max() > 1e-3


def test_softmax_gpt2_decoding_with_the_key_cache_matches_the_full_forward():
    """Softmax conversions keep transformers' key cache (linear ones: tests/test_state_cache.py)."""
    model = tiny_gpt2()
    convert(model, SoftmaxAttention)
    ids = torch.randint(1, 100, (1, 6))
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=5, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
        full = model(input_ids=out.sequences).logits
    step_logits = torch.stack(out.logits, dim=1)
    torch.testing.assert_close(step_logits, full[:, 5:-1], atol=1e-4, rtol=1e-4)


def test_stages_freeze_and_route():
    model = tiny_bert()
    convert(model, hedgehog_attention())
    counts = set_stage(model, "distill")
    maps = feature_map_parameters(model)
    assert counts["trainable"] == sum(p.numel() for p in maps.values())
    assert all(p.requires_grad == (n in maps) for n, p in model.named_parameters())
    assert all(layer.teacher_forward for layer in converted_layers(model))
    counts = set_stage(model, "finetune")
    assert counts["frozen"] == 0
    assert not any(layer.teacher_forward or layer.record for layer in converted_layers(model))
    with pytest.raises(ValueError, match="stage must be one of"):
        set_stage(model, "pretrain")


@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_distill_stage_outputs_softmax_and_trains_only_feature_maps(loss):
    model = tiny_bert()
    batch = padded_batch()
    with torch.no_grad():
        reference = model(**batch).logits
    convert(model, hedgehog_attention())
    set_stage(model, "distill")
    logits = model(**batch).logits
    torch.testing.assert_close(logits.detach(), reference, atol=1e-5, rtol=1e-5)
    losses = distillation_losses(model, loss)  # mse matches outputs: the layers record v too
    assert len(losses) == 2
    torch.stack(losses).mean().backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == set(feature_map_parameters(model))


def test_distillation_leaves_padding_out():
    """The loss of a padded sequence equals the loss of the same sequence unpadded."""
    model = tiny_bert()
    convert(model, hedgehog_attention())
    set_stage(model, "distill")
    ids = torch.randint(1, 100, (1, 6))
    with torch.no_grad():
        model(input_ids=ids)
        short = distillation_losses(model)
        padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
        model(input_ids=padded, attention_mask=torch.tensor([[1] * 6 + [0] * 4]))
        long = distillation_losses(model)
    torch.testing.assert_close(torch.stack(long), torch.stack(short), atol=1e-5, rtol=1e-5)


def test_distillation_of_a_ragged_batch_is_the_row_weighted_mean_of_its_sequences():
    """One vectorised pass over a padded batch = each sequence alone, weighted by its real tokens."""
    model = tiny_bert()
    convert(model, hedgehog_attention())
    set_stage(model, "distill")
    lengths = (9, 4)
    ids = torch.randint(1, 100, (2, 9))
    mask = torch.tensor([[1] * n + [0] * (9 - n) for n in lengths])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
        batch = torch.stack(distillation_losses(model))
        alone = []
        for b, n in enumerate(lengths):
            model(input_ids=ids[b : b + 1, :n])
            alone.append(n * torch.stack(distillation_losses(model)))
    torch.testing.assert_close(batch, sum(alone) / sum(lengths), atol=1e-5, rtol=1e-5)


def test_feature_map_state_dict_round_trips_between_models():
    source, target = tiny_bert(), tiny_bert()
    for model in (source, target):
        convert(model, partial(LinearAttention, feature_map=T2RFeatureMap))
    state = feature_map_state_dict(source)
    assert state and all("feature_map" in k for k in state)
    load_feature_maps(target, state)
    for k, v in feature_map_state_dict(target).items():
        assert torch.equal(v, state[k])
    other = tiny_bert()
    convert(other, hedgehog_attention())
    with pytest.raises(ValueError, match="do not match"):
        load_feature_maps(other, state)


def test_converted_attention_joins_the_device_of_its_layer():
    # convert after model.to(device) must not leave the feature maps behind (found on the GPU)
    model = tiny_gpt2().to("meta")
    convert(model, partial(LinearAttention, feature_map=HedgehogFeatureMap))
    devices = {p.device.type for p in feature_map_parameters(model).values()}
    assert devices == {"meta"}


def test_conversion_errors_are_clear():
    model = tiny_bert()
    convert(model, partial(LinearAttention, feature_map=PerformerFeatureMap))
    with pytest.raises(ValueError, match="already converted"):
        convert(model, SoftmaxAttention)
    revert(model)
    with pytest.raises(ValueError, match="not converted"):
        revert(model)
    softmax_model = tiny_bert()
    convert(softmax_model, SoftmaxAttention)
    set_stage(softmax_model, "distill")
    softmax_model(**padded_batch())
    with pytest.raises(ValueError, match="no converted layer has any"):
        distillation_losses(softmax_model)
    assert len(converted_layers(softmax_model)) == 2


def test_scores_scaled_unlike_one_over_sqrt_head_dim_are_reproduced():
    """GPT-2 scaled by 1/(layer + 1) as well: the converted softmax still reproduces the logits."""
    config = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, scale_attn_by_inverse_layer_idx=True)
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config).eval()
    assert model.transformer.h[1].attn.scaling == pytest.approx(8**-0.5 / 2)
    ids = torch.randint(1, 100, (2, 9))
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        convert(model, SoftmaxAttention)
        converted = model(input_ids=ids).logits
    torch.testing.assert_close(converted, reference, atol=1e-5, rtol=1e-5)


def test_a_converted_layer_given_other_heads_or_head_dims_names_both():
    model = tiny_gpt2()  # 4 heads of dimension 8
    convert(model, hedgehog_attention())
    layer = converted_layers(model)[0]
    good = torch.randn(1, 4, 5, 8)
    for q, k in [(torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)), (torch.randn(1, 4, 5, 16), good)]:
        with pytest.raises(
            ValueError, match=r"built for 4 query heads of dimension 8, but got q \(1, \d+, 5, \d+\)"
        ):
            layer(q, k, good, None)
    with pytest.raises(ValueError, match="key heads must divide query heads"):
        layer(good, torch.randn(1, 3, 5, 8), torch.randn(1, 3, 5, 8), None)
    assert layer(good, good, good, None).shape == (1, 4, 5, 8)


@pytest.mark.slow
def test_smollm2_stand_in_is_a_pretrained_llama_that_answers_and_converts():
    """SmolLM2-135M-Instruct from its GGUF package (dequantised once into the cache; about 1 s after that)."""
    name = "SmolLM2-135M-Instruct"
    tokenizer = load_tokenizer(name)
    model = causal_lm(SoftmaxAttention, pretrained=name).eval()
    assert isinstance(model, LlamaForCausalLM)
    assert fingerprint(model.config) == {
        "model_type": "llama",
        "num_hidden_layers": 30,
        "hidden_size": 576,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "vocab_size": 49152,
    }
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert pretrained_path(name).startswith(str(cache_dir("models")))
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        converted = model.generate(**ids, max_new_tokens=4, do_sample=False)
        revert(model)
        original = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(converted, original)
    assert "Paris" in tokenizer.decode(original[0, ids["input_ids"].shape[1] :])
