"""Exact and near-duplicate removal: a hash of the normalized text, and MinHash LSH.

Both keep the first occurrence and report later ones as duplicates.

Example:

>>> from tfllm.data.dedup import DedupOptions, ExactDeduplicator, NearDeduplicator
>>> exact = ExactDeduplicator()
>>> exact.is_duplicate("The  cat sat."), exact.is_duplicate("the cat sat.")
(False, True)
>>> near = NearDeduplicator(DedupOptions(near_threshold=0.6))
>>> a = "a gripping and beautifully acted film about grief , memory and the way families heal"
>>> b = "a gripping and beautifully acted movie about grief , memory and the way families heal"
>>> near.is_duplicate(a), near.is_duplicate(b)
(False, True)
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class DedupOptions:
    """Which dedup steps run, and how similar counts as a near duplicate."""

    exact: bool = True
    near: bool = True
    near_threshold: float = 0.6  # estimated Jaccard similarity of word shingles
    num_perm: int = 128
    shingle_words: int = 1
    seed: int = 1


def exact_key(text: str) -> bytes:
    """Hash of the text with case and whitespace differences removed."""
    canonical = " ".join(text.casefold().split())
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).digest()


class ExactDeduplicator:
    """Remembers the hash of every text it has seen."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def is_duplicate(self, text: str) -> bool:
        key = exact_key(text)
        if key in self._seen:
            return True
        self._seen.add(key)
        return False


def shingles(text: str, n: int = 1) -> set[bytes]:
    """Word n-grams of the casefolded text, as bytes for hashing."""
    words = _WORD.findall(text.casefold())
    if n <= 1 or len(words) < n:
        return {w.encode("utf-8") for w in words}
    return {" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


class NearDeduplicator:
    """MinHash signatures in an LSH index (datasketch); a text whose estimated Jaccard
    similarity to an earlier kept text reaches the threshold is a near duplicate."""

    def __init__(self, options: DedupOptions) -> None:
        from datasketch import MinHash, MinHashLSH

        self._options = options
        self._minhash = MinHash
        self._lsh = MinHashLSH(threshold=options.near_threshold, num_perm=options.num_perm)
        self._signatures: dict[int, object] = {}

    def signature(self, text: str):
        m = self._minhash(num_perm=self._options.num_perm, seed=self._options.seed)
        m.update_batch(list(shingles(text, self._options.shingle_words)))
        return m

    def is_duplicate(self, text: str) -> bool:
        sig = self.signature(text)
        # LSH buckets give candidates; the signature estimate decides, so that
        # band collisions below the threshold do not remove distinct texts.
        for key in self._lsh.query(sig):
            if self._signatures[key].jaccard(sig) >= self._options.near_threshold:
                return True
        key = len(self._signatures)
        self._signatures[key] = sig
        self._lsh.insert(key, sig)
        return False
