"""ListOps (Nangia & Bowman, 2018) as Long Range Arena generated it: nested list operations over digits.

An expression is a tree: each inner node applies an operator to 2..``max_args`` arguments, each a
digit 0-9 or another expression; the label is the value of the whole (a digit, so 10 classes).

- ``[MAX``, ``[MIN``: largest / smallest argument;
- ``[MED``: the median, rounded down when the count is even (LRA's ``int(np.median(args))``:
  the mean of the two middle values, truncated);
- ``[SM``: the sum modulo 10.

Written exactly in the format of the LRA release (``lra_release/listops-1000/basic_{train,val,test}.tsv``):
a header ``Source<TAB>Target``, then one row per expression. The source is LRA's tree-bank
string, in which every step of the left-nested tree ``((((op a1) a2) ...) ])`` is parenthesised:
``[MAX 2 9 ]`` is written ``( ( ( [MAX 2 ) 9 ) ] )``. Tokens are separated by single spaces.

Sampling follows LRA's generator: a node below ``max_depth`` is an operator with probability
1/4 (else a digit), with a uniform operator and a uniform argument count in 2..``max_args``; the
root is at depth 1 and nodes at ``max_depth`` are digits. Trees are drawn until ``num_samples``
distinct ones have a length in [``min_length``, ``max_length``], where length counts operators,
digits and ``]`` but not the parentheses (LRA's count; its loaders drop the parentheses, so this
is the length the model sees). The paper setting is 96,000/2,000/2,000 expressions of 500-2,000
tokens, depth 10, up to 10 arguments. Deterministic by ``seed``; splits never share an expression.

Command line: ``python -m hedgehog.data.listops OUT_DIR [--num-train N ...]``.
"""

from __future__ import annotations

import argparse
import csv
import random
from dataclasses import asdict, dataclass
from pathlib import Path

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
END = "]"
OPERATOR_P = 0.25  # LRA's chance that a node above max_depth is an operator
SPLITS = ("train", "val", "test")
HEADER = ("Source", "Target")

Tree = int | tuple[str, list["Tree"]]


@dataclass(frozen=True)
class ListOpsConfig:
    """What to generate; the defaults are LRA's paper setting."""

    num_train: int = 96_000
    num_val: int = 2_000
    num_test: int = 2_000
    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_args < 2:
            raise ValueError(f"max_args must be >= 2 (an operator takes 2+ arguments), got {self.max_args}")
        if self.max_depth < 2:
            raise ValueError(f"max_depth must be >= 2 (depth 1 is the root), got {self.max_depth}")
        if not 4 <= self.min_length <= self.max_length:
            raise ValueError(
                f"need 4 <= min_length <= max_length (the shortest expression has 4 tokens), got "
                f"min_length={self.min_length}, max_length={self.max_length}"
            )
        # The longest tree has max_args**(depth-1) digits at the bottom; shorter limits are unreachable.
        longest = sum(2 * self.max_args**d for d in range(self.max_depth - 1)) + self.max_args ** (
            self.max_depth - 1
        )
        if self.min_length > longest:
            raise ValueError(
                f"no tree of depth {self.max_depth} with {self.max_args} arguments reaches {self.min_length} "
                f"tokens (the longest has {longest}); raise max_depth or max_args, or lower min_length"
            )


class _TooLong(Exception):
    """Raised while growing a tree that already exceeds max_length: it would be rejected anyway."""


def _grow(rng: random.Random, depth: int, config: ListOpsConfig, count: list[int]) -> Tree:
    """One random subtree; ``count[0]`` accumulates its length and aborts past max_length."""
    draw = rng.random  # uniform choices as floor(n * u): one C call each (randrange is 4x slower)
    if depth < config.max_depth and draw() < OPERATOR_P:
        operator = OPERATORS[int(draw() * len(OPERATORS))]
        num_args = 2 + int(draw() * (config.max_args - 1))
        count[0] += 2  # the operator and its closing bracket
        args = [_grow(rng, depth + 1, config, count) for _ in range(num_args)]
        return operator, args
    count[0] += 1
    if count[0] > config.max_length:
        raise _TooLong
    return int(draw() * 10)


def evaluate(tree: Tree) -> int:
    """The digit an expression evaluates to."""
    if isinstance(tree, int):
        return tree
    operator, args = tree
    values = sorted(evaluate(a) for a in args)
    if operator == "[MAX":
        return values[-1]
    if operator == "[MIN":
        return values[0]
    if operator == "[MED":
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) // 2
    if operator == "[SM":
        return sum(values) % 10
    raise ValueError(f"unknown ListOps operator {operator!r}; expected one of {OPERATORS}")


def to_tokens(tree: Tree) -> list[str]:
    """LRA's tree-bank tokens: ``( ( ( [MAX 2 ) 9 ) ] )`` for ``[MAX 2 9 ]``."""
    if isinstance(tree, int):
        return [str(tree)]
    operator, args = tree
    tokens = ["("] * (len(args) + 1) + [operator]
    for arg in args:
        tokens += [*to_tokens(arg), ")"]
    return [*tokens, END, ")"]


def generate(config: ListOpsConfig) -> dict[str, list[tuple[str, int]]]:
    """(source, label) rows per split, distinct across all splits, drawn in a fixed order from ``seed``."""
    rng = random.Random(config.seed)
    wanted = config.num_train + config.num_val + config.num_test
    rows: dict[str, int] = {}
    while len(rows) < wanted:
        count = [0]
        try:
            tree = _grow(rng, 1, config, count)
        except _TooLong:
            continue
        if count[0] >= config.min_length:
            rows.setdefault(" ".join(to_tokens(tree)), evaluate(tree))
    items = list(rows.items())
    bounds = (0, config.num_train, config.num_train + config.num_val, wanted)
    return {split: items[bounds[i] : bounds[i + 1]] for i, split in enumerate(SPLITS)}


def write_listops(folder: str | Path, config: ListOpsConfig) -> Path:
    """Write ``basic_{train,val,test}.tsv`` (the LRA release's names and format) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in generate(config).items():
        with (folder / f"basic_{split}.tsv").open("w", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows(rows)
    return folder


def main(argv: list[str] | None = None) -> None:
    defaults = ListOpsConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write basic_{train,val,test}.tsv into")
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    args = vars(parser.parse_args(argv))
    out_dir = args.pop("out_dir")
    print(write_listops(out_dir, ListOpsConfig(**args)))


if __name__ == "__main__":
    main()
