"""Word-level tags from a token classifier: one tag per word from its first sub-token's
scores, decoded as the run decoded them, and the entities those tags spell.

Decoding `bio` picks the best tag sequence in which every I-X follows B-X or I-X (Viterbi
over the words' log-probabilities, with those transitions forbidden); `argmax` takes each
word's own best tag, which can open an entity with I-X (IOB1 data). Training, `tfllm
predict`, the export gate and the server all decode here.

Example:

>>> import numpy as np
>>> from tfllm_serving.tagging import decode_tags, entities
>>> logits = np.log([[[.5, .5, .01], [.6, .4, .01], [.5, .5, .01], [.9, .1, .01], [.5, .5, .01]]])
>>> first_token = np.array([[1, 3]])   # word 0 starts at token 1, word 1 at token 3
>>> decode_tags(first_token, logits, ["I-X", "O", "B-X"], [2], "argmax")
[['I-X', 'I-X']]
>>> decode_tags(first_token, logits, ["I-X", "O", "B-X"], [2], "bio")  # no entity opens with I-
[['O', 'O']]
>>> for entity in entities(["B-Disease", "I-Disease", "O", "B-Gene"],
...                        ["BRCA1", "deficiency", "in", "ATM"]):
...     print(entity)
{'type': 'Disease', 'start': 0, 'end': 2, 'text': 'BRCA1 deficiency'}
{'type': 'Gene', 'start': 3, 'end': 4, 'text': 'ATM'}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InvalidInput

DECODINGS = ("bio", "argmax")


def decode_tags(first_token: np.ndarray, logits: np.ndarray, names: Sequence[str],
                word_counts: Sequence[int], decoding: str = "bio",
                fill: str = "O") -> list[list[str]]:
    """One tag per word from per-token logits [batch, tokens, labels]; `first_token`
    [batch, words] gives each word's first sub-token (-1: none, the word gets `fill`)."""
    tags = []
    for row, count in enumerate(word_counts):
        positions = np.asarray(first_token[row][:count])
        words = np.flatnonzero(positions >= 0)
        ids = decode_word_scores(np.asarray(logits[row])[positions[words]], names, decoding)
        sentence = [fill] * count
        for word, i in zip(words, ids, strict=True):
            sentence[word] = names[i]
        tags.append(sentence)
    return tags


def decode_word_scores(scores: np.ndarray, names: Sequence[str], decoding: str = "bio"
                       ) -> list[int]:
    """Label ids for one sentence from its words' logits [words, labels]."""
    if decoding not in DECODINGS:
        raise InvalidInput(f"decoding must be one of {DECODINGS}, not {decoding!r}")
    scores = np.asarray(scores, dtype=np.float64)
    if decoding == "argmax" or len(scores) == 0:
        return scores.argmax(-1).tolist()
    log_probs = scores - np.logaddexp.reduce(scores, axis=-1, keepdims=True)
    return _viterbi(log_probs, *_bio_constraints(tuple(names)))


def entities(tags: Sequence[str], words: Sequence[str]) -> list[dict]:
    """Entities as `{"type", "start", "end" (exclusive word index), "text"}`: a B-X, or an
    I-X after anything but X (IOB1), opens one; I-X continues it; anything else closes it."""
    found: list[dict] = []
    kind, start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and label == kind
        if kind is not None and not continues:
            found.append({"type": kind, "start": start, "end": i,
                          "text": " ".join(words[start:i])})
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = label, i
    return found


def _bio_constraints(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Additive [from, to] transition and start scores: -inf where an I-X would follow
    anything but B-X or I-X (or open the sentence), 0 elsewhere."""
    transitions = np.zeros((len(names), len(names)))
    start = np.zeros(len(names))
    for to, name in enumerate(names):
        if name.startswith("I-"):
            start[to] = -np.inf
            for source, previous in enumerate(names):
                if previous not in (f"B-{name[2:]}", name):
                    transitions[source, to] = -np.inf
    return transitions, start


# Hand-written: keras-hub and the libraries DESIGN.md names have no sequence decoder.
def _viterbi(scores: np.ndarray, transitions: np.ndarray, start: np.ndarray) -> list[int]:
    total = start + scores[0]
    back = np.zeros(scores.shape, dtype=np.int64)
    for t in range(1, len(scores)):
        candidates = total[:, None] + transitions
        back[t] = candidates.argmax(0)
        total = candidates.max(0) + scores[t]
    if np.isneginf(total).all():  # no valid path (every label an I-X): per-word argmax
        return scores.argmax(-1).tolist()
    path = [int(total.argmax())]
    for t in range(len(scores) - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]
