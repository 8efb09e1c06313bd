"""How much of each set's text the default model's kept vocabulary cannot write.

    python -m infill_engine.evals.vocab_coverage [--data work-data] [--train-every 20]

Each file is tokenised with Gemma's full tokenizer (read from the base GGUF); the
share of those tokens missing from the kept table (`kept_tokens.json`) is printed per
split and language: a text that needs a dropped token is split otherwise by the
trimmed tokenizer, and the trimmed model cannot write that token.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from infill_engine.data.corpus import DEFAULT_DATA, load_split
from infill_engine.data.packages import language_of

SPLITS = ("heldout", "independent", "polyglot", "train")


def coverage(
    tokenizer: object, kept: set[int], data: Path, train_every: int
) -> dict[str, tuple[int, int]]:
    """(tokens, dropped tokens) per `split/language`."""
    counts: dict[str, tuple[int, int]] = {}
    for split in SPLITS:
        files = load_split(data, split)
        if split == "train":
            files = files[::train_every]
        for file in files:
            key = f"{split}/{language_of(file.origin) or 'python'}"
            ids = tokenizer(file.text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
            total, dropped = counts.get(key, (0, 0))
            counts[key] = (total + len(ids), dropped + sum(i not in kept for i in ids))
    return counts


def main(argv: list[str] | None = None) -> None:
    """Command line: print the dropped share per split and language."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--train-every", type=int, default=20, help="read every Nth training file"
    )
    args = parser.parse_args(argv)
    from infill_engine.model.build import base_tokenizer, kept_tokens

    tokenizer = base_tokenizer()
    kept = set(kept_tokens() or ())
    for key, (total, dropped) in sorted(
        coverage(tokenizer, kept, args.data, args.train_every).items()
    ):
        print(f"{key}: {total} tokens, {100 * dropped / max(total, 1):.2f} % dropped")


if __name__ == "__main__":
    main()
