"""Language-modelling data: corpora, splits, tokenizers, caches, blocks and the training loader."""

import json
import random
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hedgehog.data import LanguageModelingDataModule
from hedgehog.data import language_modeling as lm
from hedgehog.paths import cache_dir, npm_package_dir

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "tree", "blue", "and", "but"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HEDGEHOG_CACHE", str(tmp_path / "cache"))


def _prose(rng: random.Random, sentences: int) -> str:
    return " ".join(
        " ".join(rng.choices(WORDS, k=rng.randint(4, 12))).capitalize() + "." for _ in range(sentences)
    )


def _documents(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"Document {i}. " + _prose(rng, rng.randint(3, 8)) for i in range(count)]


def _wikitext_lines(titles: list[str], rng: random.Random) -> list[str]:
    """Rows as WikiText has them: blank rows, ' = Title = ', ' = = Section = = ', paragraphs."""
    lines = []
    for title in titles:
        lines += ["", f" = {title} = \n", "", f" {_prose(rng, 3)} \n", ""]
        lines += [" = = Early life = = \n", "", f" {_prose(rng, 2)} \n", "", " = = = Career = = = \n", ""]
        lines += [f" {_prose(rng, 2)} \n"]
    return lines


def _write_parquet(path, texts: list[str]) -> None:
    pq.write_table(pa.table({"text": texts}), path)


@pytest.fixture
def wikitext_dir(tmp_path):
    """A tiny WikiText-2 in the hub's layout: <root>/wikitext-2-raw-v1/<split>-00000-of-00001.parquet."""
    folder = tmp_path / "wikitext" / "wikitext-2-raw-v1"
    folder.mkdir(parents=True)
    rng = random.Random(0)
    titles = {"train": [f"Train article {i}" for i in range(12)], "validation": ["Val one", "Val two"]}
    titles["test"] = ["Test one", "Test two", "Test three"]
    for split, names in titles.items():
        _write_parquet(folder / f"{split}-00000-of-00001.parquet", _wikitext_lines(names, rng))
    return folder.parent


def test_wikitext_parquet_gives_official_splits_of_whole_articles(wikitext_dir):
    splits = lm.load_corpus("wikitext-2-raw-v1", wikitext_dir=wikitext_dir)
    assert {split: len(docs) for split, docs in splits.items()} == {"train": 12, "val": 2, "test": 3}
    assert splits["val"][1].startswith(" = Val two = \n")
    for article in splits["test"]:
        assert article.count(" = = Early life = = \n") == 1 and article.count(" = = = Career = = = \n") == 1
    # the rows are kept as they are: the articles of a split join back to its rows
    test_file = wikitext_dir / "wikitext-2-raw-v1" / "test-00000-of-00001.parquet"
    rows = pq.read_table(test_file).column("text").to_pylist()
    assert "".join(splits["test"]) == "".join(rows)

    dm = LanguageModelingDataModule(
        corpus="wikitext-2-raw-v1", wikitext_dir=str(wikitext_dir), vocab_size=300, seq_len=16, batch_size=2
    )
    dm.setup()
    assert dm.stats["documents"] == {"train": 12, "val": 2, "test": 3}
    assert dm.tokenizer.decode(dm.splits["val"][0][0].tolist()).startswith(" = Val one = \n")


def test_wikitext_errors_name_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"validation-\*\.parquet"):
        (tmp_path / "w").mkdir()
        _write_parquet(tmp_path / "w" / "train-00000-of-00001.parquet", [" = A = \n", " x \n"])
        lm.wikitext_splits("wikitext-2-raw-v1", tmp_path / "w")
    with pytest.raises(ValueError, match="no article title lines"):
        lm.wikitext_articles([" just text \n", " = = Section = = \n"])


def test_local_txt_jsonl_parquet_corpora(tmp_path):
    docs = _documents(6)
    folder = tmp_path / "folder"
    (folder / "nested").mkdir(parents=True)
    for i, doc in enumerate(docs[:3]):
        (folder / f"{i}.txt").write_text(doc + "\n\nsecond paragraph of the same file\n")
    (folder / "nested" / "more.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[3:5]))
    _write_parquet(folder / "last.parquet", docs[5:])
    (folder / "README.md").write_text("not a corpus file: ignored")
    found = lm.local_documents(folder)
    assert len(found) == 6 and found[0].startswith(docs[0]) and "second paragraph" in found[0]
    assert set(found[3:]) == set(docs[3:])

    single = tmp_path / "one.txt"
    single.write_text("\n\n".join(docs) + "\n")
    assert [d.strip() for d in lm.local_documents(single)] == docs
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(docs)))
    assert lm.local_documents(jsonl) == docs
    _write_parquet(tmp_path / "docs.parquet", docs)
    assert lm.local_documents(tmp_path / "docs.parquet") == docs


def test_split_is_by_document_deterministic_and_disjoint():
    docs = _documents(200) + _documents(10)  # the first ten repeated: duplicates count once
    splits = lm.split_documents(docs, 0.1, 0.05)
    assert {s: len(d) for s, d in splits.items()} == {"train": 170, "val": 20, "test": 10}
    assert splits == lm.split_documents(list(reversed(docs)), 0.1, 0.05)  # fixed by content, not by order
    seen = [set(d) for d in splits.values()]
    assert seen[0].isdisjoint(seen[1]) and seen[0].isdisjoint(seen[2]) and seen[1].isdisjoint(seen[2])
    assert set().union(*seen) == set(docs)
    # the run seed does not move documents between splits
    kwargs = {"vocab_size": 300, "seq_len": 8, "batch_size": 2}
    corpus = _write_corpus_file(docs)
    a, b = (LanguageModelingDataModule(corpus=corpus, seed=seed, **kwargs) for seed in (0, 1))
    a.setup()
    b.setup()
    assert all(np.array_equal(a.splits[s].blocks, b.splits[s].blocks) for s in lm.SPLITS)


def _write_corpus_file(docs: list[str]) -> str:
    path = cache_dir("corpora") / f"corpus-{len(docs)}.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return str(path)


def test_bpe_is_deterministic_and_cached(monkeypatch):
    docs = _documents(80)
    first, second = lm.train_bpe(docs, 300), lm.train_bpe(docs, 300)
    assert first.to_str() == second.to_str() and first.get_vocab_size() == 300
    assert first.token_to_id(lm.EOT) == 0
    text = "The cat sat under the blue tree, quickly."
    assert first.decode(first.encode(text).ids) == text

    calls = []
    monkeypatch.setattr(lm, "train_bpe", lambda *a, **k: calls.append(1) or first)
    cached = lm.bpe_tokenizer(docs, 300)
    (path,) = cache_dir("tokenizers").glob("bpe-*.json")
    stamp = path.stat().st_mtime_ns
    again = lm.bpe_tokenizer(docs, 300)
    assert len(calls) == 1 and path.stat().st_mtime_ns == stamp
    assert again.to_str() == cached.to_str() == first.to_str()
    lm.bpe_tokenizer(docs[:-1], 300)  # other training documents: another tokenizer
    assert len(calls) == 2


def test_blocks_are_contiguous_shifted_and_drop_the_tail():
    stream = np.arange(3 * 9 + 5, dtype=np.uint16)
    blocks = lm.TokenBlocks(stream, seq_len=8)
    assert len(blocks) == 3
    inputs, labels = blocks[torch.tensor([0, 1, 2])]
    assert inputs.dtype == labels.dtype == torch.long and inputs.shape == (3, 8)
    assert torch.equal(labels[:, :-1], inputs[:, 1:])
    assert torch.equal(
        torch.cat([torch.cat([x, y[-1:]]) for x, y in zip(inputs, labels, strict=True)]), torch.arange(27)
    )
    assert torch.equal(blocks[1][0], inputs[1])


def test_datamodule_batches_streams_and_cache(monkeypatch):
    docs = _documents(120)
    corpus = _write_corpus_file(docs)
    dm = LanguageModelingDataModule(
        corpus=corpus, vocab_size=320, seq_len=16, batch_size=4, eval_batch_size=3
    )
    dm.setup()
    assert dm.vocab_size <= 320 and dm.eot_id == 0
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.long
    assert x.max() < dm.vocab_size and torch.equal(x[:, 1:], y[:, :-1])
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (3, 16)

    # the val stream: its documents, each followed by end-of-text, cut into blocks in order
    val_docs = lm.load_corpus(corpus)["val"]
    expected = [t for d in val_docs for t in [*dm.tokenizer.encode(d).ids, dm.eot_id]]
    assert dm.stats["tokens"]["val"] == len(expected)
    blocks = dm.splits["val"]
    flat = torch.cat([torch.cat([blocks[i][0], blocks[i][1][-1:]]) for i in range(len(blocks))])
    assert flat.tolist() == expected[: len(flat)] and len(expected) - len(flat) < 17

    # a second module reuses both caches: no training, no tokenising
    monkeypatch.setattr(lm, "train_bpe", lambda *a, **k: pytest.fail("retrained the BPE"))
    monkeypatch.setattr(lm, "tokenize", lambda *a, **k: pytest.fail("retokenised"))
    capped = LanguageModelingDataModule(
        corpus=corpus, vocab_size=320, seq_len=16, max_train_tokens=170, max_eval_tokens=40
    )
    capped.setup()
    assert capped.stats["blocks"] == {"train": 10, "val": 2, "test": 2}
    assert np.array_equal(capped.splits["train"].blocks, dm.splits["train"].blocks[:10])


def test_training_loader_resumes_mid_epoch_and_shards():
    dm = LanguageModelingDataModule(
        corpus=_write_corpus_file(_documents(120)), vocab_size=320, seq_len=8, batch_size=4
    )
    dm.setup()
    full = [x for x, _ in dm.train_dataloader()]
    assert len(full) == len(dm.splits["train"]) // 4
    dm.trainer = SimpleNamespace(global_step=3, accumulate_grad_batches=2, global_rank=0, world_size=1)
    resumed = [x for x, _ in dm.train_dataloader()]
    assert len(resumed) == len(full) - 6 and all(
        torch.equal(a, b) for a, b in zip(resumed, full[6:], strict=True)
    )

    shards = []
    for rank in range(2):
        dm.trainer = SimpleNamespace(global_step=0, accumulate_grad_batches=1, global_rank=rank, world_size=2)
        shards.append({tuple(row.tolist()) for x, _ in dm.train_dataloader() for row in x})
    assert shards[0].isdisjoint(shards[1]) and len(shards[0]) == len(shards[1]) == 4 * (len(full) // 2)


def test_gpt2_bpe_from_npm_matches_gpt2():
    tokenizer = lm.gpt2_tokenizer_from_files(npm_package_dir(lm.GPT2_NPM))
    assert tokenizer.get_vocab_size() == 50257 and tokenizer.token_to_id(lm.EOT) == 50256
    assert tokenizer.encode("Hello world").ids == [15496, 995]
    assert tokenizer.encode(" Hello, world!").ids == [18435, 11, 995, 0]
    text = " Héllo  wörld\n\n= Title =\n"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text


def test_gpt2_tokenizer_tries_the_network_last(monkeypatch):
    """With no hub cache, GPT-2's tokenizer comes from the npm files without a download attempt (offline the
    hub client retries for about 45 s)."""
    import transformers

    calls = []

    def from_pretrained(name, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        raise OSError("not in the local cache")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    tokenizer = lm.gpt2_tokenizer()
    assert calls == [True] and tokenizer.encode("Hello world").ids == [15496, 995]


def test_gpt2_needs_a_model_vocabulary_of_50257(tmp_path):
    corpus = _write_corpus_file(_documents(60))
    with pytest.raises(ValueError, match="at least 50257"):
        LanguageModelingDataModule(corpus=corpus, tokenizer="gpt2", vocab_size=8192).setup()
    dm = LanguageModelingDataModule(corpus=corpus, tokenizer="gpt2", vocab_size=50304, seq_len=32)
    dm.setup()
    assert dm.vocab_size == 50257 and dm.eot_id == 50256
    assert dm.tokenizer.encode("Hello world").ids == [15496, 995]
    with pytest.raises(ValueError, match="at least 50257"):
        dm.check_model_vocab(50000)


def test_bbc_news_and_brown_load_with_plausible_token_counts():
    bbc = lm.load_corpus("bbc_news")
    assert {s: len(d) for s, d in bbc.items()} == {"train": 1915, "val": 106, "test": 106}  # 2,127 distinct
    brown = lm.load_corpus("brown")
    assert {s: len(d) for s, d in brown.items()} == {"train": 450, "val": 25, "test": 25}
    first = lm.brown_documents()[0]
    assert first.startswith(
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election "
        'produced "no evidence" that any irregularities took place.\nThe jury further said'
    )
    assert "/" not in first.split("\n")[0]
    for splits in (bbc, brown):
        tokenizer = lm.train_bpe(splits["train"][:150], 2048)
        sample = splits["val"][:10]
        tokens_per_word = len(lm.tokenize(tokenizer, sample)) / sum(len(d.split()) for d in sample)
        assert 1.1 < tokens_per_word < 2.0


def test_clear_errors():
    with pytest.raises(FileNotFoundError, match="neither a named corpus"):
        lm.load_corpus("/no/such/corpus")
    with pytest.raises(ValueError, match=r"unknown format '\.csv'.*\.txt, \.jsonl, \.parquet"):
        path = cache_dir("corpora") / "table.csv"
        path.write_text("text\nhello\n")
        lm.load_corpus(str(path))
    with pytest.raises(ValueError, match=r"holds no \.txt, \.jsonl, \.parquet files"):
        lm.local_documents(cache_dir("empty"))
    with pytest.raises(ValueError, match="string `text` field"):
        (cache_dir("corpora") / "bad.jsonl").write_text('{"body": "x"}\n')
        lm.local_documents(cache_dir("corpora") / "bad.jsonl")
    with pytest.raises(ValueError, match="leave a split empty"):
        lm.split_documents(_documents(5), 0.05, 0.05)
    with pytest.raises(FileNotFoundError, match=r"data\.tokenizer takes bpe, gpt2, a tokenizer\.json file"):
        lm.corpus_tokenizer("sentencepiece", _documents(5), 300)
    with pytest.raises(ValueError, match="vocab_size >= 257"):
        lm.train_bpe(_documents(5), 200)
    dm = LanguageModelingDataModule(corpus=_write_corpus_file(_documents(60)), vocab_size=300, seq_len=4096)
    with pytest.raises(ValueError, match="fewer than one block"):
        dm.setup()
    with pytest.raises(ValueError, match="model's vocabulary is 100"):
        dm.check_model_vocab(100)


def test_config_trains_a_language_model_in_the_pipeline(tmp_path):
    from hedgehog.train import train

    from .pipeline import compose_config

    corpus = _write_corpus_file(_documents(120))
    overrides = ["data=language_modeling", f"data.corpus={corpus}", "data.vocab_size=300", "data.seq_len=16"]
    overrides += ["data.batch_size=4", "model.d_model=16", "trainer.fast_dev_run=true", "logger=csv"]
    overrides += ["trainer.enable_progress_bar=false", "~callbacks.progress_bar"]
    cfg = compose_config(overrides, tmp_path)
    assert cfg.data.vocab_size == cfg.model.vocab_size == 300
    record = train(cfg)
    assert 0 < record["metrics"]["test/loss"] < 2 * np.log(300)


def test_ngram_baselines_match_a_direct_count_model():
    """The reference levels a language model must beat: add-one unigram and add-k bigram perplexity."""
    rng = np.random.default_rng(0)
    train, test, vocab = rng.integers(0, 7, 500), rng.integers(0, 7, 60), 7
    counts = np.bincount(train, minlength=vocab) + 1.0
    unigram = np.exp(-np.mean(np.log(counts[test] / counts.sum())))
    table = np.full((vocab, vocab), 0.1)
    np.add.at(table, (train[:-1], train[1:]), 1.0)
    bigram = np.exp(-np.mean(np.log(table[test[:-1], test[1:]] / table[test[:-1]].sum(1))))
    got = lm.ngram_baselines(train.astype(np.uint16), test.astype(np.uint16), vocab)
    assert got == pytest.approx({"unigram_ppl": unigram, "bigram_ppl": bigram}, rel=1e-9)
