"""Token classification (NER) data: words -> sub-tokens with labels on the first sub-token.

The loss sees one label per word (its first sub-token); the other sub-tokens, [CLS],
[SEP] and padding carry `IGNORE` and are skipped (`ignore_class` in the Keras loss).
Predictions go back to words the same way: a word's scores are its first sub-token's.
Decoding `bio` picks the best tag sequence in which every I-X follows B-X or I-X (Viterbi
over the words' log-probabilities, with those transitions forbidden); `argmax` takes
each word's own best tag, which can open an entity with I-X.

Example:

>>> import numpy as np
>>> from tfllm.finetune.tagging import decode_tags, encode_tagged
>>> from tfllm.tokenization.wordpiece import build_bert_tokenizer
>>> tok = build_bert_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "new",
...                             "york", "##er", "lives"])
>>> enc = encode_tagged(tok, [["Yorker", "lives"]], [["B-X", "O"]], {"B-X": 0, "O": 1}, 8)
>>> enc["labels"][0].tolist()   # [CLS] york ##er lives [SEP] (padding)
[-100, 0, -100, 1, -100]
>>> logits = np.log([[[.5, .5], [.6, .4], [.5, .5], [.9, .1], [.5, .5]]])
>>> decode_tags(enc["first_token"], logits, ["I-X", "O"], [2], "argmax")
[['I-X', 'I-X']]
>>> decode_tags(enc["first_token"], logits, ["I-X", "O"], [2], "bio")  # no entity opens with I-
[['O', 'O']]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import log_softmax
from tokenizers import Tokenizer

from tfllm.errors import InputError

IGNORE = -100
DECODINGS = ("bio", "argmax")


def encode_tagged(tokenizer: Tokenizer, words: Sequence[Sequence[str]],
                  tags: Sequence[Sequence[str]] | None, index: dict[str, int] | None,
                  max_len: int) -> dict[str, np.ndarray]:
    """Model inputs, per-token `labels` (IGNORE off first sub-tokens) and `first_token`
    [batch, words] (the position of each word's first sub-token, -1 when truncated away)."""
    tokenizer.enable_truncation(max_length=max_len)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch([list(w) for w in words], is_pretokenized=True)
    width = len(encodings[0].ids) if encodings else 0
    most_words = max((len(w) for w in words), default=0)
    labels = np.full((len(encodings), width), IGNORE, dtype=np.int32)
    first = np.full((len(encodings), most_words), -1, dtype=np.int32)
    for row, encoding in enumerate(encodings):
        seen = set()
        for position, word in enumerate(encoding.word_ids):
            if word is None or word in seen:
                continue
            seen.add(word)
            first[row, word] = position
            if tags is not None:
                labels[row, position] = index[tags[row][word]]
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int32).reshape(-1, width),
        "attention_mask": np.array([e.attention_mask for e in encodings],
                                   dtype=np.int32).reshape(-1, width),
        "token_type_ids": np.array([e.type_ids for e in encodings],
                                   dtype=np.int32).reshape(-1, width),
        "labels": labels,
        "first_token": first,
    }


def decode_tags(first_token: np.ndarray, logits: np.ndarray, names: list[str],
                word_counts: Sequence[int], decoding: str = "bio",
                fill: str = "O") -> list[list[str]]:
    """One tag per word from per-token logits [batch, tokens, labels] (see the module
    docstring for `decoding`); words without a sub-token (cut off by max_len, or empty
    once normalized) get `fill`."""
    if decoding not in DECODINGS:
        raise InputError(f"task.decoding must be one of {DECODINGS}, not {decoding!r}")
    transitions, start = _bio_constraints(names)
    tags = []
    for row, count in enumerate(word_counts):
        positions = first_token[row][:count]
        words = np.flatnonzero(positions >= 0)
        scores = log_softmax(np.asarray(logits[row], dtype=np.float64)[positions[words]], axis=-1)
        if decoding == "argmax" or len(words) == 0:
            ids = scores.argmax(-1).tolist()
        else:
            ids = _viterbi(scores, transitions, start)
        sentence = [fill] * count
        for word, i in zip(words, ids, strict=True):
            sentence[word] = names[i]
        tags.append(sentence)
    return tags


def _bio_constraints(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
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


def check_decoding(sentences: Sequence, decoding: str) -> None:
    """A known `decoding`, and under `bio` IOB2 tags (an I-X only after B-X or I-X): IOB1
    data, whose I-X may open an entity, needs `argmax`."""
    if decoding not in DECODINGS:
        raise InputError(f"task.decoding must be one of {DECODINGS}, not {decoding!r}")
    for sentence in sentences if decoding == "bio" else ():
        previous = "O"
        for offset, tag in enumerate(sentence.tags):
            if tag.startswith("I-") and previous not in (f"B-{tag[2:]}", tag):
                raise InputError(
                    f"{sentence.source}:{sentence.lines[offset]}: tag {tag!r} after "
                    f"{previous!r} is not IOB2; decode IOB1 tags with argmax "
                    "(task.decoding=argmax, or evaluate --decoding argmax)")
            previous = tag
