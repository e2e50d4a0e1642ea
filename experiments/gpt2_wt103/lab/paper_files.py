"""Local files in the real formats, for running the paper-scale GPT-2 configs where the hub is unreachable.

- ``<out>/wikitext/wikitext-103-raw-v1/``: WikiText-103's hub layout (``train-0000i-of-00002.parquet``,
  ``validation-00000-of-00001.parquet``, ``test-00000-of-00001.parquet``; one ``text`` column, one row
  per line, `` = Title = `` headings, blank rows between paragraphs), filled with the Brown corpus's 500
  samples (450 / 25 / 25 articles) instead of Wikipedia's: real English, about 1.5M words.
- ``<out>/gpt2-random/``: a Hugging Face GPT-2 folder of the hub's ``gpt2`` shape (12 layers, 768 wide,
  12 heads, 1,024 positions, vocabulary 50,257), randomly initialised: the real checkpoint (500 MB)
  cannot travel to a lent GPU machine, and speed and memory do not depend on the weights' values.

    python -m experiments.gpt2_wt103.lab.paper_files --out /tmp/paper_files
then, e.g. ``data.wikitext_dir=/tmp/paper_files/wikitext`` and ``model.pretrained=/tmp/paper_files/gpt2-random``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hedgehog.data.language_modeling import brown_documents


def wikitext_rows(title: str, text: str) -> list[str]:
    """One article as WikiText's rows: a heading, then each paragraph as a row, blank rows around them."""
    rows = ["", f" = {title} = \n", ""]
    for paragraph in (p.strip() for p in text.split("\n")):
        if paragraph:
            rows += [f" {paragraph} \n", ""]
    return rows


def write_wikitext(root: Path, name: str = "wikitext-103-raw-v1", train_shards: int = 2) -> Path:
    documents = brown_documents()
    articles = [wikitext_rows(f"Brown sample {i}", text) for i, text in enumerate(documents)]
    splits = {"train": articles[:450], "validation": articles[450:475], "test": articles[475:]}
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_articles in splits.items():
        shards = train_shards if split == "train" else 1
        for shard in range(shards):
            rows = [row for article in split_articles[shard::shards] for row in article]
            path = folder / f"{split}-{shard:05d}-of-{shards:05d}.parquet"
            pq.write_table(pa.table({"text": rows}), path)
    return root


def write_random_gpt2(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-model", action="store_true", help="only the WikiText folder")
    args = parser.parse_args()
    print("wikitext:", write_wikitext(args.out / "wikitext"))
    if not args.no_model:
        print("gpt2:", write_random_gpt2(args.out / "gpt2-random"))


if __name__ == "__main__":
    main()
