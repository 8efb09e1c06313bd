"""Train a from-scratch model's tokenizer on the training split; save it into a model
dir.

python -m infill_engine.training.vocab --out work-data/model [--vocab-size 8192]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from infill_engine.data.corpus import DEFAULT_DATA, load_split
from infill_engine.model.tokenizer import train_tokenizer

DEFAULT_VOCAB_SIZE = 8192


def main(argv: list[str] | None = None) -> None:
    """Command line: train a byte-level BPE on the train split, `save_pretrained` it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    args = parser.parse_args(argv)
    texts = [f.text for f in load_split(args.data, "train")]
    tokenizer = train_tokenizer(texts, args.vocab_size)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(args.out)
    tokens = sum(
        len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]
    )
    chars = sum(len(t) for t in texts)
    print(
        f"vocab {len(tokenizer)}; train split {tokens} tokens, "
        f"{chars / tokens:.2f} chars/token"
    )


if __name__ == "__main__":
    main()
