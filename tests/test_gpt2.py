"""GPT-2 as a causal LM: from scratch (LanguageModelingTask) and converted (ConversionTask's causal-LM form)."""

import math
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from transformers import AutoModelForCausalLM

from hedgehog.attention import HedgehogFeatureMap, LinearAttention, SoftmaxAttention
from hedgehog.generate import load
from hedgehog.generate import main as generate_main
from hedgehog.models.conversion import distillation_losses, feature_map_parameters, set_stage
from hedgehog.models.pretrained import causal_lm, save_pretrained_model
from hedgehog.tasks.conversion import ConversionTask
from hedgehog.tasks.language_modeling import LanguageModelingTask, next_token_loss
from hedgehog.train import train

from .pipeline import TINY, compose_config

TINY_GPT2 = {"vocab_size": 64, "n_positions": 32, "n_layer": 2, "n_embd": 16, "n_head": 2}
HEDGEHOG = partial(LinearAttention, feature_map=HedgehogFeatureMap, chunk_size=8)


class Blocks(pl.LightningDataModule):
    """Random token blocks in the LM data module's layout: (input_ids, labels) shifted by one."""

    def __init__(self, n: int = 24, t: int = 20, vocab: int = 64) -> None:
        super().__init__()
        stream = torch.randint(0, vocab, (n, t + 1), generator=torch.Generator().manual_seed(0))
        self.data = list(zip(stream[:, :-1], stream[:, 1:], strict=True))
        self.vocab = vocab

    def check_model_vocab(self, size: int) -> None:
        assert size >= self.vocab

    def _loader(self):
        return torch.utils.data.DataLoader(self.data, batch_size=8)

    train_dataloader = val_dataloader = test_dataloader = _loader


def test_perplexity_is_exp_of_the_token_weighted_mean_loss():
    """Val/test perplexity pools every token of the split, not the mean of per-batch perplexities."""
    torch.manual_seed(0)
    model = causal_lm(SoftmaxAttention, config=TINY_GPT2)
    task = LanguageModelingTask(model, partial(torch.optim.AdamW, lr=1e-3), perplexity=True)
    data = Blocks()
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    (result,) = trainer.test(task, datamodule=data, verbose=False)
    model.eval()
    with torch.no_grad():
        total = sum(next_token_loss(model(input_ids=x[None]).logits, y[None])[0] for x, y in data.data)
    assert result["test/ppl"] == pytest.approx(math.exp(total / len(data.data)), rel=1e-4)


def test_causal_lm_builds_fresh_or_pretrained_and_rejects_both():
    fresh = causal_lm(HEDGEHOG, config=TINY_GPT2)
    assert fresh.config.use_cache is False and feature_map_parameters(fresh)
    with pytest.raises(ValueError, match="either `pretrained`"):
        causal_lm(HEDGEHOG)
    with pytest.raises(ValueError, match="got both"):
        causal_lm(HEDGEHOG, pretrained="gpt2", config=TINY_GPT2)
    with pytest.raises(ValueError, match="exceed the model's 32 positions"):
        causal_lm(HEDGEHOG, config=TINY_GPT2, max_len=64)


def test_saved_model_loads_as_the_original_architecture_with_the_same_logits(tmp_path):
    """A from-scratch softmax run saves what a later conversion starts from: plain GPT-2 weights."""
    model = causal_lm(SoftmaxAttention, config=TINY_GPT2).eval()
    ids = torch.randint(0, 64, (2, 12))
    save_pretrained_model(model, tmp_path / "pretrained")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pretrained").eval()
    assert not any("converted_attention" in k for k in loaded.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=1e-5
        )
    again = causal_lm(SoftmaxAttention, pretrained=str(tmp_path / "pretrained")).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            again(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=1e-5
        )


def test_causal_distillation_lowers_the_loss_and_trains_only_the_feature_maps():
    """Stage 1 of the causal-LM recipe: the frozen model's q, k are recorded without gradients, each
    layer's maps learn its causal softmax attention, all layers jointly."""
    torch.manual_seed(0)
    model = causal_lm(HEDGEHOG, config=TINY_GPT2)
    for block in model.transformer.h:  # spikier attention than the init's near-uniform weights
        block.attn.c_attn.weight.data.mul_(40.0)
    counts = set_stage(model, "distill")
    maps = feature_map_parameters(model)
    assert counts["trainable"] == sum(p.numel() for p in maps.values())
    frozen = {n: p.clone() for n, p in model.named_parameters() if n not in maps}
    optimizer = torch.optim.AdamW(maps.values(), lr=3e-2)
    ids = torch.randint(0, 64, (4, 24))
    losses = []
    for _ in range(40):
        with torch.no_grad():
            model(input_ids=ids)
        loss = torch.stack(distillation_losses(model, "kl")).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 0.1 and losses[-1] < 0.8 * losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n not in maps)


@pytest.mark.parametrize(("distill", "finetune"), [(0, 0), (3, 3)])
def test_conversion_task_causal_lm(distill, finetune):
    """Both stages run on (input_ids, labels) batches and report perplexity; 0 and 0 evaluates only."""
    torch.manual_seed(0)
    build = partial(causal_lm, HEDGEHOG, config=TINY_GPT2)
    task = ConversionTask(
        build,
        partial(torch.optim.AdamW, lr=1e-3),
        partial(torch.optim.AdamW, lr=1e-2),
        distill_steps=distill,
        finetune_steps=finetune,
        objective="causal_lm",
    )
    trainer = pl.Trainer(
        max_steps=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        val_check_interval=10**6,
        check_val_every_n_epoch=None,
    )
    data = Blocks()
    trainer.fit(task, datamodule=data)
    (result,) = trainer.test(task, datamodule=data, verbose=False)
    assert trainer.global_step == distill + finetune
    assert math.isfinite(result["test/ppl"]) and result["test/ppl"] > 1.0
    assert result["test/ppl"] == pytest.approx(math.exp(result["test/loss"]), rel=1e-3)


def test_conversion_task_rejects_an_unknown_objective():
    with pytest.raises(ValueError, match="unknown objective"):
        ConversionTask(causal_lm, torch.optim.AdamW, torch.optim.AdamW, objective="seq2seq")


@pytest.mark.slow
def test_pretraining_run_hands_its_model_to_the_conversion(tmp_path):
    """The embedded Table 10: gpt2_wt103's softmax run saves a model and tokenizer that gpt2_convert loads."""
    scratch = compose_config(["experiment=gpt2_wt103", "attention=softmax", *TINY], tmp_path / "scratch")
    train(scratch)
    pretrained = scratch.task.save_pretrained
    convert = compose_config(
        [
            "experiment=gpt2_convert",
            "attention=hedgehog",
            *TINY,
            "model.pretrained=" + pretrained,
            "model.config=null",
            "data.tokenizer=" + pretrained,
        ],
        tmp_path / "convert",
    )
    record = train(convert)
    assert record["config"]["model"]["pretrained"] == pretrained
    assert math.isfinite(record["metrics"]["test/ppl"]) and record["metrics"]["test/distill_steps"] == 2


def test_generate_cli_from_a_run_and_from_a_saved_model(tmp_path, capsys):
    """hedgehog-generate rebuilds a run's model from its record and checkpoint, or loads a saved folder,
    and prints the greedy continuation the model itself gives."""
    cfg = compose_config(["experiment=gpt2_wt103", "attention=hedgehog", *TINY], tmp_path)
    train(cfg)
    capsys.readouterr()  # the run's own test table
    run = Path(cfg.paths.output_dir)
    model, tokenizer = load(run)
    prompt = "The jury said"
    ids = torch.tensor([tokenizer.encode(prompt).ids])
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    expected = prompt + tokenizer.decode(greedy[0, ids.shape[1] :].tolist())
    generate_main([str(run), "--prompt", prompt, "--max-new-tokens", "6"])
    assert capsys.readouterr().out.strip() == expected.strip()
    assert not Path(cfg.task.save_pretrained).exists()  # only softmax models are saved as pretrained folders
    softmax = compose_config(["experiment=gpt2_wt103", "attention=softmax", *TINY], tmp_path / "softmax")
    train(softmax)
    capsys.readouterr()
    generate_main(
        [softmax.task.save_pretrained, "--prompt", prompt, "--max-new-tokens", "3", "--temperature", "0.8"]
    )
    assert capsys.readouterr().out.startswith(prompt)
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        load(tmp_path / "nothing")


def test_ddp_scaling_report_gives_speedup_and_efficiency_per_gpu_count():
    """lab/ddp_scaling.py (issue 17's report): per world size the tokens/s, the speed-up over the fewest
    GPUs and the efficiency; a record without throughput is named."""
    from experiments.gpt2_wt103.lab.ddp_scaling import scaling_rows

    def record(world_size: int, rate: float) -> dict:
        metrics = {"train/tokens_per_s": rate, "train/loss": 4.0, "val/loss": 4.5}
        return {
            "world_size": world_size,
            "metrics": metrics,
            "config": {"data": {"batch_size": 32 // world_size}},
        }

    rows = scaling_rows([record(2, 180_000.0), record(1, 100_000.0), record(4, 300_000.0)])
    assert [r[:5] for r in rows] == [
        ["1", "32", "100,000", "1.00x", "100%"],
        ["2", "32", "180,000", "1.80x", "90%"],
        ["4", "32", "300,000", "3.00x", "75%"],
    ]
    with pytest.raises(ValueError, match=r"world sizes \[2\]"):
        scaling_rows([record(1, 1.0), {**record(2, 1.0), "metrics": {}}])
