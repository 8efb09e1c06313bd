"""Token healing: let the fill rewrite the prefix's last token.

A hole cut mid-word (`self.ty|pe`) leaves the prefix ending in a piece (` ty`) that the
tokenizer would never produce for the whole text (` type`), and the model must continue
from a split it rarely saw. Healing leaves that last token off the canvas and lets the
first span slot hold only tokens whose text starts with it (` ty`, ` type`, ` typed`,
...); the fill is what follows the healed text. The same holds after a space or a sign
(`x = |foo`: the prefix ends in ` `, where the tokenizer writes ` foo`; `f(|`), so any
last token is healed but one that holds a line break (a fill does not rewrite the line
above). With the diffusion adapter, healing only word pieces matched more held-out
lines; with floor decoding, which is the base's own reading, healing every piece does
(docs/model.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

# Allowed-token masks kept, by healed text (a new one costs a pass over the vocabulary).
_CACHED = 512


class TokenHealing:
    """Every token's text, and which tokens may replace a prefix's last one.

    Args:
        tokenizer: the model's tokenizer.
        vocab_size: the model's vocabulary (ids past the tokenizer's have no text).
        never: ids the first span slot never holds in a healed fill (end of span).
    """

    def __init__(
        self, tokenizer: Any, vocab_size: int, never: Iterable[int] = ()
    ) -> None:
        known = min(len(tokenizer), vocab_size)
        ids = [[i] for i in range(known)]
        # The Rust tokenizer's own batch decode gives the same texts (no clean-up of
        # spaces for these tokenizers) without converting 32k lists to Python first.
        fast = getattr(tokenizer, "backend_tokenizer", None)
        if fast is not None and not getattr(
            tokenizer, "clean_up_tokenization_spaces", False
        ):
            texts = fast.decode_batch(ids, skip_special_tokens=True)
        else:
            texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        self.texts: list[str] = texts + [""] * (vocab_size - known)
        for i in never:
            if 0 <= i < vocab_size:
                self.texts[i] = ""
        self.vocab_size = vocab_size
        self._masks: dict[str, torch.Tensor] = {}

    def heal(self, ids: Sequence[int]) -> tuple[list[int], str]:
        """The prefix ids without their last token, and its text; the ids unchanged
        and "" when that token holds a line break (a fill does not rewrite the line
        above), has no text (a special token) or only part of a character (a byte
        of a longer UTF-8 sequence, which decodes to U+FFFD)."""
        if not ids:
            return list(ids), ""
        last = ids[-1]
        text = self.texts[last] if 0 <= last < self.vocab_size else ""
        if not text or "\n" in text or "\ufffd" in text:
            return list(ids), ""
        return list(ids[:-1]), text

    def allowed(self, healed: str) -> torch.Tensor:
        """(V,) bool: the tokens whose text starts with `healed` (all, if it is "")."""
        if not healed:
            return torch.ones(self.vocab_size, dtype=torch.bool)
        mask = self._masks.get(healed)
        if mask is None:
            mask = torch.tensor([t.startswith(healed) for t in self.texts])
            if len(self._masks) >= _CACHED:
                self._masks.clear()
            self._masks[healed] = mask
        return mask

    def rows(self, healed: Sequence[str], rows: Sequence[int]) -> torch.Tensor:
        """(B, V) allowed tokens for the first span slot of each canvas row: request
        i's `healed` text for its `rows[i]` rows."""
        masks = [
            self.allowed(h) for h, n in zip(healed, rows, strict=True) for _ in range(n)
        ]
        return torch.stack(masks)


def unheal(text: str, healed: str) -> str:
    """A decoded fill without the healed text it starts with."""
    return text[len(healed) :] if text.startswith(healed) else text
