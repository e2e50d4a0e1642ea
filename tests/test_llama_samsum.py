"""Llama conversion with LoRA on summarisation (paper Table 11): the task's batches, test-time summaries and
ROUGE, layer-wise stage 1, saved converted models from a run (tiny random Llama)."""

import json
from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hedgehog.attention import HedgehogFeatureMap, LinearAttention, SlidingWindowLinearAttention
from hedgehog.data.summarization import SummarizationDataModule
from hedgehog.generate import load
from hedgehog.generate import main as generate_main
from hedgehog.models.conversion import (
    convert,
    distillation_backward,
    distillation_losses,
    feature_map_parameters,
    set_stage,
)
from hedgehog.models.lora import add_lora
from hedgehog.models.pretrained import load_tokenizer, save_pretrained_model
from hedgehog.tasks.conversion import ConversionTask
from hedgehog.tasks.metrics import rouge
from hedgehog.train import train
from tests.pipeline import TINY, compose_config
from tests.test_summarization_data import DIALOGUES, word_tokenizer

HEDGEHOG = partial(LinearAttention, feature_map=HedgehogFeatureMap)
WINDOW = partial(SlidingWindowLinearAttention, feature_map=HedgehogFeatureMap, window=4)
PROMPT = "Summarize: {input} Summary:"


def write_pairs(folder):
    """A local summarisation folder in the generic schema: jsonl files with input and target."""
    folder.mkdir(parents=True)
    for split, rows in DIALOGUES.items():
        lines = [json.dumps({"id": i, "input": d, "target": t}) + "\n" for i, d, t in rows]
        (folder / f"{split}.jsonl").write_text("".join(lines))
    return folder


def word_data(tmp_path, **kwargs) -> SummarizationDataModule:
    texts = [PROMPT] + [t for rows in DIALOGUES.values() for _, d, s in rows for t in (d, s)]
    data = SummarizationDataModule(
        word_tokenizer(texts), dataset=str(write_pairs(tmp_path / "pairs")), prompt_template=PROMPT, **kwargs
    )
    data.setup()
    return data


def tiny_llama(vocab_size: int, layers: int = 2, attention=HEDGEHOG, lora: bool = False) -> LlamaForCausalLM:
    """A fresh Llama (grouped-query heads, RoPE; untied embeddings, so greedy text varies) converted to ``attention``."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.config.use_cache = False
    convert(model, attention)
    if lora:
        add_lora(model, r=4, alpha=8)
    return model


def conversion_task(build, **kwargs) -> ConversionTask:
    return ConversionTask(
        build,
        partial(torch.optim.AdamW, lr=1e-3),
        partial(torch.optim.AdamW, lr=1e-2),
        objective="causal_lm",
        **kwargs,
    )


def trainer() -> pl.Trainer:
    return pl.Trainer(
        max_steps=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        val_check_interval=10**6,
        check_val_every_n_epoch=None,
    )


def test_summarisation_batches_train_on_the_loss_the_model_itself_gives(tmp_path):
    """Dict batches (labels on the summary's own tokens) are shifted into the next-token loss: the same value
    as Hugging Face's loss with those labels; (input_ids, labels) blocks are used as they come."""
    data = word_data(tmp_path, batch_size=3)
    model = tiny_llama(len(data.tokenizer))
    task = conversion_task(lambda: model)
    task.model = model
    batch = next(iter(data.train_dataloader()))
    assert (batch["attention_mask"] == 0).any()  # right-padded: padding never enters the loss
    with torch.no_grad():
        ours = task.task_loss(task(batch), task.labels(batch))
        reference = model(**batch).loss
        torch.testing.assert_close(ours, reference)
        ids = batch["input_ids"][:1, :6]
        block = (ids[:, :-1], ids[:, 1:])
        torch.testing.assert_close(
            task.task_loss(task(block), task.labels(block)),
            model(input_ids=ids, labels=ids).loss,
        )


def greedy_alone(model, prompt: list[int], max_new_tokens: int, eos: int) -> list[int]:
    """Greedy tokens by full forwards of one unpadded prompt (no cache): the reference for generation."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if token == eos:
                break
            ids.append(token)
    return ids[len(prompt) :]


@pytest.mark.parametrize("attention", [HEDGEHOG, WINDOW], ids=["hedgehog", "hybrid"])
def test_the_test_split_writes_greedy_summaries_from_the_state_and_scores_rouge(attention, tmp_path):
    """Left-padded prompt batches decode from the linear state; each summary is what the prompt alone gives
    by full forwards, and the logged ROUGE is the ROUGE of the kept predictions."""
    data = word_data(tmp_path, eval_batch_size=3)
    model = tiny_llama(len(data.tokenizer), attention=attention, lora=True)
    with torch.no_grad():  # EOS's logit held at 0: the random model writes a few words before max_new_tokens
        model.lm_head.weight[data.tokenizer.eos_token_id] = 0.0
    task = conversion_task(lambda: model, max_new_tokens=5)
    fit = trainer()
    fit.fit(task, datamodule=data)  # 0 and 0 steps: nothing trains
    (result,) = fit.test(task, datamodule=data, verbose=False)
    examples = data.examples["test"]
    assert [p["id"] for p in task.predictions] == [e.id for e in examples]
    prompts = data.prompt_ids([e.input for e in examples])
    assert len({len(p) for p in prompts}) > 1  # the batch is left-padded
    model.eval()
    for prediction, prompt, example in zip(task.predictions, prompts, examples, strict=True):
        tokens = greedy_alone(model, prompt, 5, data.tokenizer.eos_token_id)
        assert tokens, "a random model that stops at once tests nothing"
        assert prediction["prediction"] == data.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        assert prediction["references"] == list(example.references)
    scores = rouge([p["prediction"] for p in task.predictions], [p["references"] for p in task.predictions])
    for name, value in scores.items():
        assert result[f"test/{name}"] == pytest.approx(value, abs=1e-4)
    words = sum(len(p["prediction"].split()) for p in task.predictions) / len(task.predictions)
    assert result["test/summary_words"] == pytest.approx(words)
    assert "test/ppl" not in result  # generation batches carry no loss


def spiky_distill_model(attention=HEDGEHOG, layers: int = 3) -> LlamaForCausalLM:
    """A converted tiny Llama in stage 1 whose attention is spikier than the init's near-uniform weights."""
    torch.manual_seed(0)
    model = tiny_llama(64, layers=layers, attention=attention)
    for layer in model.model.layers:
        layer.self_attn.q_proj.weight.data.mul_(8.0)
        layer.self_attn.k_proj.weight.data.mul_(8.0)
    set_stage(model, "distill")
    return model


@pytest.mark.parametrize("attention", [HEDGEHOG, WINDOW], ids=["hedgehog", "hybrid"])
@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_layerwise_stage_one_gives_the_joint_gradients(attention, loss):
    """From one no-grad teacher forward, blocks of 1 or 2 layers back-propagated in turn give every feature
    map (and window factor) the gradient of the joint loss, and the same loss value."""
    model = spiky_distill_model(attention)
    ids = torch.randint(4, 64, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a left-padded row: padded keys and queries are left out alike
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    maps = feature_map_parameters(model)
    reference = torch.stack(distillation_losses(model, loss)).mean()
    reference.backward()
    joint = {n: p.grad.clone() for n, p in maps.items()}
    assert all(g.abs().sum() > 0 for g in joint.values())
    for block in (None, 1, 2):
        for p in maps.values():
            p.grad = None
        value = distillation_backward(model, loss, block)
        torch.testing.assert_close(value, reference.detach())
        for name, p in maps.items():
            torch.testing.assert_close(
                p.grad, joint[name], rtol=1e-5, atol=1e-8, msg=f"{name}, block {block}"
            )


def test_layerwise_stage_one_lowers_the_loss_and_trains_only_the_maps():
    model = spiky_distill_model()
    maps = feature_map_parameters(model)
    frozen = {n: p.clone() for n, p in model.named_parameters() if n not in maps}
    optimizer = torch.optim.AdamW(maps.values(), lr=3e-2)
    ids = torch.randint(4, 64, (4, 24))
    losses = []
    for _ in range(30):
        with torch.no_grad():
            model(input_ids=ids)
        optimizer.zero_grad()
        losses.append(float(distillation_backward(model, "kl", block=1)))
        optimizer.step()
    assert losses[0] > 0.05 and losses[-1] < 0.7 * losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n not in maps)


def test_the_task_trains_the_same_maps_layer_by_layer_as_jointly(tmp_path):
    """ConversionTask's distill_layers changes the memory stage 1 holds, not what it learns."""
    maps = []
    for distill_layers in ("all", 1):
        data = word_data(tmp_path / str(distill_layers), batch_size=2)
        torch.manual_seed(0)
        model = tiny_llama(len(data.tokenizer), layers=3)
        initial = {n: p.detach().clone() for n, p in feature_map_parameters(model).items()}
        task = conversion_task(lambda m=model: m, distill_steps=3, distill_layers=distill_layers)
        trainer().fit(task, datamodule=data)
        maps.append({n: p.detach().clone() for n, p in feature_map_parameters(model).items()})
    assert maps[0].keys() == maps[1].keys() == initial.keys()
    for name, value in maps[0].items():
        assert not torch.equal(value, initial[name]), f"stage 1 left {name} untrained"
        torch.testing.assert_close(maps[1][name], value, rtol=1e-5, atol=1e-6)


def test_conversion_task_options_are_checked():
    with pytest.raises(ValueError, match="distill_layers must be 'all'"):
        conversion_task(lambda: None, distill_layers=0)
    with pytest.raises(ValueError, match="distill_layers must be 'all'"):
        conversion_task(lambda: None, distill_layers="layerwise")
    with pytest.raises(ValueError, match=r"save_converted needs converted_from\.base_model"):
        conversion_task(lambda: None, save_converted="out", converted_from={"base_model": None})
    with pytest.raises(ValueError, match="max_new_tokens must be positive"):
        conversion_task(lambda: None, max_new_tokens=0)


def test_a_run_saves_the_converted_model_that_hedgehog_generate_loads(tmp_path, capsys):
    """task.save_converted after a tiny run on a local input/target folder: the folder loads (load_converted,
    through hedgehog-generate) into the model that wrote the run's test summaries."""
    base = tiny_llama(49152, attention=HEDGEHOG)
    from hedgehog.models.conversion import revert

    revert(base)
    tokenizer = load_tokenizer("SmolLM2-135M-Instruct")
    base.config.eos_token_id = base.config.pad_token_id = tokenizer.eos_token_id
    save_pretrained_model(base, tmp_path / "base", tokenizer)
    saved = tmp_path / "converted"
    cfg = compose_config(
        [
            "experiment=llama_samsum",
            "attention=hedgehog",
            *TINY,
            f"model.pretrained={tmp_path / 'base'}",
            "model.config=null",
            f"data.dataset={write_pairs(tmp_path / 'pairs')}",
            "data.max_input_tokens=64",
            f"task.save_converted={saved}",
        ],
        tmp_path,
    )
    record = train(cfg)
    assert {"test/rouge1", "test/rouge2", "test/rougeL"} <= set(record["metrics"])
    assert len(record["predictions"]) == len(DIALOGUES["test"])
    assert (saved / "hedgehog_config.json").is_file()
    model, loaded_tokenizer = load(saved)
    lora = {n for n, _ in model.named_parameters() if ".lora_" in n}
    assert lora and feature_map_parameters(model)
    first, text = record["predictions"][0], DIALOGUES["test"][0][1]
    capsys.readouterr()
    generate_main(
        [
            str(saved),
            "--chat",
            "--prompt",
            cfg.data.prompt_template.format(input=text),
            "--max-new-tokens",
            str(cfg.task.max_new_tokens),
        ]
    )
    assert capsys.readouterr().out.strip() == first["prediction"]
    assert first["prediction"], "the tiny model wrote nothing: the comparison would test nothing"
    assert len(loaded_tokenizer) == len(tokenizer)
