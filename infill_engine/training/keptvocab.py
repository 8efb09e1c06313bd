"""Choose the default model's kept vocabulary on the data pack's five languages.

    python -m infill_engine.training.keptvocab [--pack work-data/datapack]
        [--out infill_engine/adapter/kept_tokens.json]

The default model keeps 32,768 of Gemma's 262,144 tokens (`model.trim`). Which ones
decides what it can write: a text that needs a dropped token is split otherwise, and
the model cannot write that token. The first table was chosen on the Python training
split alone and dropped 5.7 % of the tokens Gemma writes for held-out TypeScript
(`evals.vocab_coverage`). This one counts, with Gemma's full tokenizer, the tokens of
every training file of the data pack (decoded from the pack, which holds them
exactly), gives each language the same weight (a token's score is the sum over
languages of its share of that language's tokens), and keeps specials, bytes and the
best-scoring tokens closed under BPE merges (`trim.choose_kept`). No held-out file is
read.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from infill_engine.model.trim import DEFAULT_SIZE, choose_kept
from infill_engine.training.datapack import DEFAULT_OUT, DataPack


def language_scores(
    pack: DataPack, trimmed: Any, full: Any
) -> tuple[Counter[int], dict[str, int]]:
    """Each full-tokenizer id's summed share of its languages' tokens, and the tokens
    counted per language."""
    names = [str(n) for n in pack.arrays["train_language_names"]]
    languages = pack.arrays["train_languages"]
    offsets = pack.arrays["train_offsets"]
    tokens = pack.arrays["train_tokens"]
    per: dict[str, Counter[int]] = {name: Counter() for name in names}
    for number in range(len(offsets) - 1):
        text = trimmed.decode(tokens[offsets[number] : offsets[number + 1]].tolist())
        ids = full(text, add_special_tokens=False)["input_ids"]
        per[names[languages[number]]].update(ids)
    scores: Counter[int] = Counter()
    for counts in per.values():
        total = sum(counts.values())
        for token, count in counts.items():
            scores[token] += count / total  # type: ignore[assignment]
    return scores, {name: sum(c.values()) for name, c in per.items() if c}


def main(argv: list[str] | None = None) -> None:
    """Command line: write the table."""
    from infill_engine.model import build

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--out", type=Path, default=build.KEPT_TOKENS)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    pack = DataPack.load(args.pack)
    trimmed = AutoTokenizer.from_pretrained(str(build.built_model_dir()))
    from infill_engine.training.datapack import tokenizer_fingerprint

    if pack.manifest.get("tokenizer_sha256") != tokenizer_fingerprint(trimmed):
        parser.error("the pack was not tokenised with the built model's tokenizer")
    full = build.base_tokenizer()
    scores, counted = language_scores(pack, trimmed, full)
    kept = choose_kept(json.loads(full.backend_tokenizer.to_str()), scores, args.size)
    args.out.write_text(json.dumps(kept))
    print(f"{len(kept)} tokens kept, from {counted}; written to {args.out}")


if __name__ == "__main__":
    main()
