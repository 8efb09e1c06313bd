"""Trim Gemma's 262,144-token vocabulary to the tokens code uses.

Most of Gemma's vocabulary is words of natural languages that code rarely holds, and
every token costs a row of the LM head, of the sampler's softmax and of the
self-conditioning embedding at every denoising step. The build keeps a shipped table of
token ids (`kept_tokens.json`, chosen by `choose_kept` from token counts over the
training split) and cuts the embedding and the tokenizer to it:

- kept: the first `SPECIAL_PREFIX` ids (pad, eos, bos, unk, mask and the unused ids the
  config points at), the 256 byte tokens, and the most frequent tokens, closed under
  BPE: every kept token's merge parts are kept, so the tokenizer can still build it;
- the tokenizer keeps the merges whose parts and result are kept. Text that used a
  dropped token is encoded into kept pieces (byte tokens at worst), so every text still
  round-trips.

New ids follow the old ids' order, so the special ids do not move.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SPECIAL_PREFIX = 9  # <pad> <eos> <bos> <unk> <mask> [multimodal] <unused0..2>
DEFAULT_SIZE = 32768


def token_counts(tokenizer: Any, texts: Iterable[str]) -> Counter[int]:
    """How often each token id occurs in `texts`."""
    counts: Counter[int] = Counter()
    for text in texts:
        counts.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    return counts


def choose_kept(
    tokenizer_json: dict[str, Any], counts: Counter[int], size: int = DEFAULT_SIZE
) -> list[int]:
    """The old ids to keep, sorted: specials, bytes, then the most frequent tokens
    with their merge parts, while the total stays within `size`."""
    model = tokenizer_json["model"]
    vocab: dict[str, int] = model["vocab"]
    parts = _merge_parts(model["merges"])
    names = {i: t for t, i in vocab.items()}
    kept = set(range(SPECIAL_PREFIX))
    kept.update(vocab[f"<0x{b:02X}>"] for b in range(256))
    for token_id, _ in counts.most_common():
        needed = _closure(names[token_id], parts, vocab) - kept
        if len(kept) + len(needed) > size:
            continue
        kept |= needed
    return sorted(kept)


def trim_tokenizer(tokenizer_json: dict[str, Any], kept: Sequence[int]) -> dict:
    """A copy of a tokenizer.json with only `kept` ids, renumbered in order."""
    out = json.loads(json.dumps(tokenizer_json))
    model = out["model"]
    new_id = {old: new for new, old in enumerate(kept)}
    vocab = {t: new_id[i] for t, i in model["vocab"].items() if i in new_id}
    model["vocab"] = vocab
    model["merges"] = [
        m
        for m in model["merges"]
        if _pair(m)[0] in vocab and _pair(m)[1] in vocab and "".join(_pair(m)) in vocab
    ]
    out["added_tokens"] = [
        dict(t, id=new_id[t["id"]]) for t in out["added_tokens"] if t["id"] in new_id
    ]
    _renumber_post_processor(out.get("post_processor"), new_id)
    return out


def trim_model(model: Any, kept: Sequence[int]) -> None:
    """Cut a DiffusionGemma's (tied) embedding and LM head to the `kept` rows."""
    import torch

    index = torch.tensor(list(kept), dtype=torch.long)
    embed = model.model.decoder.embed_tokens
    embed.weight = torch.nn.Parameter(embed.weight.detach()[index].clone())
    embed.num_embeddings = len(kept)
    model.model.encoder.language_model.embed_tokens = embed
    model.lm_head.weight = embed.weight
    model.lm_head.out_features = len(kept)
    model.config.text_config.vocab_size = len(kept)
    model.config.vocab_size = len(kept)


def write_trimmed_tokenizer(directory: Path, kept: Sequence[int]) -> None:
    """Rewrite `directory/tokenizer.json` to the kept tokens."""
    path = directory / "tokenizer.json"
    full = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(trim_tokenizer(full, kept)), encoding="utf-8")


def _pair(merge: Any) -> tuple[str, str]:
    if isinstance(merge, str):
        left, right = merge.split(" ", 1)
        return left, right
    return merge[0], merge[1]


def _merge_parts(merges: list[Any]) -> dict[str, tuple[str, str]]:
    """For each merged token, the first (highest-priority) merge that makes it."""
    parts: dict[str, tuple[str, str]] = {}
    for merge in merges:
        left, right = _pair(merge)
        parts.setdefault(left + right, (left, right))
    return parts


def _closure(
    token: str, parts: dict[str, tuple[str, str]], vocab: dict[str, int]
) -> set[int]:
    """`token` and every token its merges are built from."""
    out: set[int] = set()
    stack = [token]
    while stack:
        name = stack.pop()
        if name not in vocab or vocab[name] in out:
            continue
        out.add(vocab[name])
        stack.extend(parts.get(name, ()))
    return out


def _renumber_post_processor(processor: Any, new_id: dict[int, int]) -> None:
    """Special-token ids inside a TemplateProcessing post-processor follow the trim."""
    if not processor:
        return
    for special in (processor.get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special.get("ids", [])]
