"""Summarisation data: local files in SAMSum's schema, ACLSum's real package, prompt/target formatting."""

import json

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from hedgehog.data.loading import IGNORE_INDEX
from hedgehog.data.summarization import (
    DEFAULT_PROMPT,
    SummarizationDataModule,
    detokenize_ptb,
    load_examples,
)
from hedgehog.paths import project_root

PROMPT = "Summarize: {input} Summary:"
DIALOGUES = {
    "train": [
        ("t1", "Amanda: I baked cookies. Do you want some?\nJerry: Sure!", "Amanda baked cookies for Jerry."),
        ("t2", "Olivia: Who are you voting for?\nOliver: Liberals as always.", "Oliver votes for liberals."),
        ("t3", "Tim: Hi, what's up?\nKim: Bad mood tbh", "Kim is in a bad mood."),
        ("t4", "Edward: Rachel, I think I'm in love with Bella..", "Edward thinks he loves Bella."),
    ],
    "validation": [("v1", "Sam: are you coming?\nMia: in 5 min", "Mia comes in 5 minutes.")],
    "test": [
        ("s1", "Lucas: lunch at noon?\nEmma: ok", "Lucas and Emma meet for lunch at noon."),
        ("s2", "Ann: where are my keys", "Ann lost her keys."),
        ("s3", "Bob: the train is late again, I will be late too", "Bob's train is late."),
    ],
}


def write_samsum(folder):
    """SAMSum's schema (id, dialogue, summary) in the three formats the loader reads."""
    folder.mkdir()
    rows = {s: [{"id": i, "dialogue": d, "summary": t} for i, d, t in r] for s, r in DIALOGUES.items()}
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows["train"]))
    pd.DataFrame(rows["validation"]).to_parquet(folder / "validation.parquet")
    (folder / "test.json").write_text(json.dumps(rows["test"]))
    return folder


def word_tokenizer(texts, chat: bool = False) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word, a BOS added to every text: token counts are word counts."""
    words = sorted({w for t in texts for w in t.split()})
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat:
        tokenizer.chat_template = (
            "{% for m in messages %}<|user|> {{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %} <|assistant|>{% endif %}"
        )
    return tokenizer


def all_texts():
    texts = [PROMPT, "<|user|> <|assistant|>"]
    for rows in DIALOGUES.values():
        texts += [t for _, d, s in rows for t in (d, s)]
    return texts


def datamodule(folder, **kwargs) -> SummarizationDataModule:
    tokenizer = kwargs.pop("tokenizer", None) or word_tokenizer(all_texts())
    data = SummarizationDataModule(tokenizer, dataset=str(folder), prompt_template=PROMPT, **kwargs)
    data.setup()
    return data


def words(tokenizer, ids) -> list[str]:
    return tokenizer.convert_ids_to_tokens([int(i) for i in ids])


def test_local_samsum_files_in_jsonl_parquet_and_json(tmp_path):
    folder = write_samsum(tmp_path / "samsum")
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        examples = load_examples(str(folder), split)
        assert [(e.id, e.input, e.references) for e in examples] == [
            (i, d, (s,)) for i, d, s in DIALOGUES[name]
        ]


def test_training_batches_label_only_the_summary_and_its_eos(tmp_path):
    data = datamodule(write_samsum(tmp_path / "samsum"), batch_size=2)
    tok = data.tokenizer
    batches = list(data.train_dataloader())
    assert len(batches) == 2
    seen = set()
    for batch in batches:
        for ids, mask, labels in zip(
            batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True
        ):
            n = int(mask.sum())
            assert mask[:n].all() and not mask[n:].any()  # right padding
            assert (ids[n:] == tok.pad_token_id).all() and (labels[n:] == IGNORE_INDEX).all()
            start = int((labels != IGNORE_INDEX).nonzero()[0])
            tokens = words(tok, ids[:n])
            assert tokens[0] == "<s>" and tokens[start - 1] == "Summary:" and tokens[-1] == "</s>"
            assert torch.equal(labels[start:n], ids[start:n])
            summary = " ".join(tokens[start:-1])
            dialogue = " ".join(tokens[2 : start - 1])
            assert (summary, dialogue) in {(s, " ".join(d.split())) for _, d, s in DIALOGUES["train"]}
            seen.add(summary)
    assert len(seen) == 4  # one epoch: every example once


def test_generation_batches_are_left_padded_prompts_with_their_references(tmp_path):
    data = datamodule(write_samsum(tmp_path / "samsum"), eval_batch_size=2)
    tok = data.tokenizer
    batches = list(data.test_dataloader())
    assert [b["ids"] for b in batches] == [["s1", "s2"], ["s3"]]
    assert [b["references"] for b in batches] == [
        [["Lucas and Emma meet for lunch at noon."], ["Ann lost her keys."]],
        [["Bob's train is late."]],
    ]
    first = batches[0]
    for ids, mask, (_, dialogue, _) in zip(
        first["input_ids"], first["attention_mask"], DIALOGUES["test"], strict=False
    ):
        n = int(mask.sum())
        assert not mask[: len(mask) - n].any() and mask[len(mask) - n :].all()  # left padding
        assert words(tok, ids[len(mask) - n :]) == ["<s>", "Summarize:", *dialogue.split(), "Summary:"]
    # the validation loss uses training-format batches in a fixed order
    (val,) = list(data.val_dataloader())
    assert words(tok, val["labels"][0][val["labels"][0] != IGNORE_INDEX]) == [
        *["Mia", "comes", "in", "5", "minutes."],
        "</s>",
    ]


def test_several_references_train_once_each_and_are_all_kept_for_scoring(tmp_path):
    folder = tmp_path / "generic"
    folder.mkdir()
    rows = [
        {"input": "a long text one", "target": ["first summary", "second summary"]},
        {"input": "text two", "target": "only"},
    ]
    for split in ("train", "val", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = word_tokenizer([PROMPT, "a long text one first second summary text two only"])
    data = datamodule(folder, tokenizer=tok, batch_size=3)
    (batch,) = list(data.train_dataloader())
    targets = {" ".join(words(tok, row[row != IGNORE_INDEX])) for row in batch["labels"]}
    assert targets == {"first summary </s>", "second summary </s>", "only </s>"}
    (test,) = list(data.test_dataloader())
    assert test["references"] == [["first summary", "second summary"], ["only"]]
    assert test["ids"] == ["0", "1"]


def test_long_inputs_and_targets_are_cut(tmp_path):
    data = datamodule(write_samsum(tmp_path / "samsum"), max_input_tokens=3, max_target_tokens=2)
    tok = data.tokenizer
    (prompt,) = data.prompt_ids(["one two three four five"])
    assert words(tok, prompt)[:5] == ["<s>", "Summarize:", "<unk>", "<unk>", "<unk>"]
    assert len(prompt) == 6  # <s> Summarize: + 3 input tokens + Summary:
    assert data.target_ids(["Kim is in a bad mood."]) == [tok.convert_tokens_to_ids(["Kim", "is"])]


def test_chat_template_wraps_the_prompt_as_the_user_turn(tmp_path):
    data = datamodule(
        write_samsum(tmp_path / "samsum"),
        tokenizer=word_tokenizer(all_texts(), chat=True),
        chat_template=True,
    )
    tok = data.tokenizer
    (prompt,) = data.prompt_ids(["Ann: where are my keys"])
    assert words(tok, prompt) == [
        "<|user|>",
        "Summarize:",
        "Ann:",
        "where",
        "are",
        "my",
        "keys",
        "Summary:",
        "<|assistant|>",
    ]
    assert words(tok, data.target_ids(["Ann lost her keys."])[0]) == ["Ann", "lost", "her", "keys.", "</s>"]


def test_aclsum_from_its_package():
    sizes = {split: len(load_examples("aclsum", split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 100, "val": 50, "test": 100}
    first = load_examples("aclsum", "train")[0]
    assert first.id == "P06-1112"
    assert first.input.startswith("In this paper, we explore correlation of dependency relation paths")
    assert first.input.endswith("by up to 20% in MRR.")
    (summary,) = first.references
    assert summary.startswith("A generally accessible NER system") and summary.count(". ") == 2
    assert summary.split(". ")[1].startswith(
        "They propose a statistical method"
    )  # challenge, approach, outcome
    assert summary.endswith("where NER performs poorly.")

    tok = word_tokenizer([PROMPT])
    data = SummarizationDataModule(tok, prompt_template=PROMPT, num_train=8, num_test=4, max_input_tokens=64)
    data.setup()
    assert len(data.examples["train"]) == 8 and len(data.examples["val"]) == 50
    again = SummarizationDataModule(tok, prompt_template=PROMPT, num_train=8, seed=5)
    again.setup()
    assert [e.id for e in again.examples["train"]] == [e.id for e in data.examples["train"]]  # fixed by split
    batch = next(iter(data.test_dataloader()))
    assert batch["input_ids"].shape == (
        4,
        1 + 1 + 64 + 1,
    )  # these four abstracts exceed 64 words (ACLSum: 56-589)


def test_ptb_detokenisation():
    text = "In this paper , we use ( QA ) data : 20 % better ; it 's done ."
    assert detokenize_ptb(text) == "In this paper, we use (QA) data: 20% better; it's done."


def test_errors_are_clear(tmp_path):
    tok = word_tokenizer([PROMPT])
    with pytest.raises(ValueError, match="unknown summarisation dataset 'xsum'"):
        SummarizationDataModule(tok, dataset="xsum").setup()
    with pytest.raises(ValueError, match="must contain \\{input\\}"):
        SummarizationDataModule(tok, prompt_template="Summary:")
    with pytest.raises(ValueError, match="no chat template"):
        SummarizationDataModule(tok, chat_template=True)
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"text": "x", "label": 1}) + "\n")
    with pytest.raises(ValueError, match=r"columns \['label', 'text'\]; expected SAMSum's"):
        load_examples(str(folder), "train")
    with pytest.raises(FileNotFoundError, match=r"no test file .*\(test\)\(\.jsonl"):
        load_examples(str(folder), "test")


def test_the_data_config_builds_the_module_with_the_default_prompt():
    node = OmegaConf.load(project_root() / "conf" / "data" / "summarization.yaml")
    data = instantiate(node, tokenizer=word_tokenizer([PROMPT]), seed=0, num_test=2)
    assert isinstance(data, SummarizationDataModule)
    assert data.prompt_template == DEFAULT_PROMPT and data.dataset == "aclsum"
    data.setup()
    assert next(iter(data.test_dataloader()))["input_ids"].shape[0] == 2
