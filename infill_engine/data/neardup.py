"""Near-duplicate files, found by MinHash with banded locality-sensitive hashing.

Exact copies are caught by `corpus.content_hash`; vendored copies with a changed header,
a renamed function or one more import are not. Each file becomes the set of its 5-token
shingles (tokens: words and single punctuation marks), summarised by 64 minimum hashes;
two files whose summaries agree in one of 16 bands of 4 are compared, and they are near
duplicates when the share of equal minimum hashes (an estimate of the Jaccard
similarity of their shingle sets) is at least `THRESHOLD`.

Written here rather than taken from a library: it is forty lines over numpy, which the
project already has through transformers, where the usual library brings scipy.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

SHINGLE = 5
PERMUTATIONS = 64
BANDS = 16
THRESHOLD = 0.8
_PRIME = 2_147_483_647  # 2**31 - 1: (a * x + b) stays below 2**63 for 32-bit x
_TOKEN = re.compile(r"\w+|[^\w\s]")
_rng = np.random.default_rng(20261207)
_A = _rng.integers(1, _PRIME, PERMUTATIONS, dtype=np.int64)
_B = _rng.integers(0, _PRIME, PERMUTATIONS, dtype=np.int64)


def signature(text: str) -> np.ndarray:
    """(PERMUTATIONS,) minimum hashes of the text's shingles (all -1 when it has
    fewer tokens than one shingle)."""
    tokens = _TOKEN.findall(text)
    if len(tokens) < SHINGLE:
        return np.full(PERMUTATIONS, -1, dtype=np.int64)
    grams = {
        zlib.crc32(" ".join(tokens[i : i + SHINGLE]).encode())
        for i in range(len(tokens) - SHINGLE + 1)
    }
    x = np.fromiter(grams, dtype=np.int64, count=len(grams))
    return ((np.outer(x, _A) + _B) % _PRIME).min(axis=0)


class NearDuplicates:
    """Files seen so far; `find` names a near duplicate of a new one among them."""

    def __init__(self) -> None:
        self._bands: dict[tuple[int, bytes], list[int]] = {}
        self._signatures: list[np.ndarray] = []
        self._keys: list[str] = []

    def find(self, text: str) -> str | None:
        """The key of a file already added that `text` nearly duplicates, or None."""
        return self._match(signature(text))

    def add(self, key: str, text: str) -> str | None:
        """Add `text` under `key` unless it nearly duplicates a file already added;
        returns that file's key (and adds nothing) or None (added)."""
        sig = signature(text)
        found = self._match(sig)
        if found is None:
            index = len(self._keys)
            self._keys.append(key)
            self._signatures.append(sig)
            for band in _bands(sig):
                self._bands.setdefault(band, []).append(index)
        return found

    def _match(self, sig: np.ndarray) -> str | None:
        if sig[0] < 0:
            return None
        seen: set[int] = set()
        for band in _bands(sig):
            for index in self._bands.get(band, ()):
                if index in seen:
                    continue
                seen.add(index)
                if float((self._signatures[index] == sig).mean()) >= THRESHOLD:
                    return self._keys[index]
        return None


def _bands(sig: np.ndarray) -> list[tuple[int, bytes]]:
    rows = PERMUTATIONS // BANDS
    return [(b, sig[b * rows : (b + 1) * rows].tobytes()) for b in range(BANDS)]
