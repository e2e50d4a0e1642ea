"""LoRA on converted models and saved converted models (tiny random Llama, GQA + RoPE)."""

from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from hedgehog.attention import HedgehogFeatureMap, LinearAttention
from hedgehog.models.cache import LinearAttentionCache
from hedgehog.models.conversion import (
    ConvertedAttention,
    convert,
    converted_layers,
    feature_map_parameters,
    feature_map_state_dict,
    set_stage,
)
from hedgehog.models.lora import add_lora, lora_modules, lora_state_dict
from hedgehog.models.pretrained import causal_lm
from hedgehog.models.saving import CONFIG_FILE, WEIGHTS_FILE, base_digest, load_converted, save_converted
from hedgehog.paths import project_root
from tests.test_state_cache import tiny_llama

ATTENTION = {
    "_target_": "hedgehog.attention.LinearAttention",
    "_partial_": True,
    "feature_map": {"_target_": "hedgehog.attention.HedgehogFeatureMap", "_partial_": True},
}


def converted_llama():
    model = tiny_llama()
    convert(model, partial(LinearAttention, feature_map=HedgehogFeatureMap))
    return model


def perturb(params) -> None:
    """Move parameters off their initial values (B = 0, identity maps) so that saving them matters."""
    with torch.no_grad():
        for p in params:
            p.add_(0.2 * torch.randn_like(p))


def trained_llama(train_feature_maps: bool = True):
    """A converted tiny Llama with LoRA whose feature maps and adapters hold non-initial values."""
    model = add_lora(converted_llama(), r=4, alpha=8, train_feature_maps=train_feature_maps)
    perturb(p for p in model.parameters() if p.requires_grad)
    return model


def test_lora_wraps_only_the_projections_and_trains_only_what_it_is_told():
    model = converted_llama()
    attentions = converted_layers(model)
    ids = torch.randint(1, 100, (2, 7))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    add_lora(model, r=4, alpha=8)
    with torch.no_grad():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, atol=0, rtol=0)  # B starts at zero
    assert converted_layers(model) == attentions  # the same modules, untouched
    names = sorted(lora_modules(model))
    assert len(names) == 8 and {n.rsplit(".", 1)[1] for n in names} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    }
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    model(input_ids=ids).logits.sum().backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable

    # the recipe's stages keep LoRA's choice: distill trains feature maps, finetune the adapters again
    maps = set(feature_map_parameters(model))
    set_stage(model, "distill")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == maps
    set_stage(model, "finetune")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable

    with_maps = add_lora(converted_llama(), train_feature_maps=True)
    assert {n for n, p in with_maps.named_parameters() if p.requires_grad} == (
        {n for n in dict(with_maps.named_parameters()) if ".lora_" in n} | maps
    )


def test_decoding_from_the_state_with_lora_equals_the_full_forward():
    model = trained_llama().eval()
    ids = torch.randint(1, 100, (2, 12))
    cache = LinearAttentionCache(model)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        steps = [
            model(input_ids=ids[:, a:b], cache=cache, use_cache=True).logits
            for a, b in [(0, 7), (7, 8), (8, 12)]
        ]
        cached = model.generate(
            ids[:, :5], max_new_tokens=6, do_sample=False, cache=LinearAttentionCache(model)
        )
        uncached = model.generate(ids[:, :5], max_new_tokens=6, do_sample=False, use_cache=False)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert torch.equal(cached, uncached)


def test_add_lora_errors_are_clear():
    with pytest.raises(ValueError, match="no converted attention"):
        add_lora(tiny_llama())
    model = add_lora(converted_llama())
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        add_lora(model)
    with pytest.raises(ValueError, match="inside the converted attention"):
        add_lora(converted_llama(), target_modules=("q_proj", "feature_map"))


def _save_base(tmp_path):
    base = tiny_llama()
    base.save_pretrained(tmp_path / "base")
    return base, str(tmp_path / "base")


def _trained_from(base):
    model = type(base)(base.config).eval()
    model.load_state_dict(base.state_dict())
    convert(model, partial(LinearAttention, feature_map=HedgehogFeatureMap))
    add_lora(model, r=4, alpha=8, train_feature_maps=True)
    perturb(p for p in model.parameters() if p.requires_grad)
    return model.eval()


def test_save_then_load_reproduces_logits_and_greedy_tokens_and_merging_changes_nothing(tmp_path):
    base, base_dir = _save_base(tmp_path)
    model = _trained_from(base)
    save_converted(model, tmp_path / "lora", base_dir, ATTENTION)
    save_converted(model, tmp_path / "merged", base_dir, OmegaConf.create(ATTENTION), merge_lora=True)
    ids = torch.randint(1, 100, (2, 9))
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        tokens = model.generate(
            ids[:, :4], max_new_tokens=6, do_sample=False, cache=LinearAttentionCache(model)
        )
        for kind in ("lora", "merged"):
            loaded = load_converted(tmp_path / kind)
            assert bool(lora_modules(loaded)) == (kind == "lora")
            torch.testing.assert_close(loaded(input_ids=ids).logits, reference, atol=1e-5, rtol=1e-5)
            again = loaded.generate(
                ids[:, :4], max_new_tokens=6, do_sample=False, cache=LinearAttentionCache(loaded)
            )
            assert torch.equal(again, tokens)
    # only what was trained, as safetensors and JSON: no pickle, no base weights
    for kind in ("lora", "merged"):
        assert sorted(p.name for p in (tmp_path / kind).iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    saved = load_file(tmp_path / "lora" / WEIGHTS_FILE)
    assert set(saved) == set(lora_state_dict(model)) | {
        k for k in model.state_dict() if ".converted_attention.attention.feature_map." in k
    }
    merged = load_file(tmp_path / "merged" / WEIGHTS_FILE)
    assert sum(k.endswith("proj.weight") for k in merged) == 8 and not any(".lora_" in k for k in merged)


def test_stage_one_saves_the_feature_maps_alone_and_a_full_finetune_the_whole_model(tmp_path):
    """Whatever is set to train is saved; the attention is rebuilt from the node of conf/attention/hedgehog.yaml."""
    base, base_dir = _save_base(tmp_path)
    node = OmegaConf.load(project_root() / "conf" / "attention" / "hedgehog.yaml")
    model = type(base)(base.config).eval()
    model.load_state_dict(base.state_dict())
    convert(model, instantiate(node))
    ids = torch.randint(1, 100, (1, 8))
    references = {}
    set_stage(model, "distill")
    perturb(feature_map_parameters(model).values())
    save_converted(model, tmp_path / "maps", base_dir, node)
    assert set(load_file(tmp_path / "maps" / WEIGHTS_FILE)) == set(feature_map_state_dict(model))
    set_stage(model, "finetune")  # no LoRA: every weight trains
    with torch.no_grad():
        references["maps"] = model(input_ids=ids).logits
    perturb(model.parameters())
    save_converted(model, tmp_path / "all", base_dir, node)
    assert set(load_file(tmp_path / "all" / WEIGHTS_FILE)) >= {n for n, _ in model.named_parameters()}
    with torch.no_grad():
        references["all"] = model(input_ids=ids).logits
    for kind, reference in references.items():
        loaded = load_converted(tmp_path / kind)
        assert all(isinstance(m, ConvertedAttention) and m.is_linear for m in converted_layers(loaded))
        with torch.no_grad():
            torch.testing.assert_close(loaded(input_ids=ids).logits, reference, atol=1e-5, rtol=1e-5)


def test_loading_onto_another_base_or_other_shapes_names_both(tmp_path):
    base, base_dir = _save_base(tmp_path)
    save_converted(_trained_from(base), tmp_path / "saved", base_dir, ATTENTION)
    other = tiny_llama()
    other.config.num_hidden_layers = 3
    type(other)(other.config).save_pretrained(tmp_path / "other")
    with pytest.raises(
        ValueError, match=r"trained on base model .*base.* but .*other.* num_hidden_layers 2 vs 3"
    ):
        load_converted(tmp_path / "saved", base_model=str(tmp_path / "other"))

    tiny_llama().save_pretrained(tmp_path / "same-shape")  # other random weights
    with pytest.raises(ValueError, match=r"has other weights of the same shapes \(digest [0-9a-f]{16}\)"):
        load_converted(tmp_path / "saved", base_model=str(tmp_path / "same-shape"))

    tensors = load_file(tmp_path / "saved" / WEIGHTS_FILE)
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = torch.zeros(5, tensors[key].shape[1])
    save_file(tensors, tmp_path / "saved" / WEIGHTS_FILE)
    with pytest.raises(ValueError, match=rf"{key} was saved with shape \(5, 32\) but .* has \(4, 32\)"):
        load_converted(tmp_path / "saved")
    with pytest.raises(FileNotFoundError, match="holds no saved converted model"):
        load_converted(tmp_path / "other")


def test_causal_lm_converts_loads_feature_maps_and_attaches_lora(tmp_path):
    base, base_dir = _save_base(tmp_path)
    source = _trained_from(base)
    torch.save(feature_map_state_dict(source), tmp_path / "maps.pt")
    attention = partial(LinearAttention, feature_map=HedgehogFeatureMap)
    model = causal_lm(
        attention, pretrained=base_dir, feature_maps=str(tmp_path / "maps.pt"), lora={"r": 4, "alpha": 8}
    )
    for key, value in feature_map_state_dict(model).items():
        assert torch.equal(value, feature_map_state_dict(source)[key])
    assert len(lora_modules(model)) == 8
    assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_the_weights_digest_ignores_dtype_but_not_values_and_skips_what_was_saved():
    model = tiny_llama()
    digest = base_digest(model, skip=set())
    assert base_digest(tiny_llama().to(torch.bfloat16), skip=set()) != digest
    same = tiny_llama()
    same.load_state_dict(model.state_dict())
    assert base_digest(same.to(torch.bfloat16), skip=set()) == digest
    skip = {"model.embed_tokens.weight"}
    with torch.no_grad():
        same.model.embed_tokens.weight.add_(1.0)
    assert base_digest(same, skip) == base_digest(model, skip) != digest
