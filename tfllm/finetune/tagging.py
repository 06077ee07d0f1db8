"""Token classification (NER) training data: words -> sub-tokens with labels on the first
sub-token.

The loss sees one label per word (its first sub-token); the other sub-tokens, [CLS],
[SEP] and padding carry `IGNORE` and are skipped (`ignore_class` in the Keras loss).
Predictions go back to words the same way, decoded by `tfllm_serving.tagging` (the server
decodes there too, so served tags are the measured ones).

Example:

>>> from tfllm.finetune.tagging import encode_tagged
>>> from tfllm_serving.wordpiece import build_bert_tokenizer
>>> tok = build_bert_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "new",
...                             "york", "##er", "lives"])
>>> enc = encode_tagged(tok, [["Yorker", "lives"]], [["B-X", "O"]], {"B-X": 0, "O": 1}, 8)
>>> enc["labels"][0].tolist()   # [CLS] york ##er lives [SEP] (padding)
[-100, 0, -100, 1, -100]
>>> enc["first_token"][0].tolist()
[1, 3]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tfllm_serving.tagging import DECODINGS
from tfllm_serving.wordpiece import encode_words
from tokenizers import Tokenizer

from tfllm.errors import InputError

IGNORE = -100


def encode_tagged(tokenizer: Tokenizer, words: Sequence[Sequence[str]],
                  tags: Sequence[Sequence[str]] | None, index: dict[str, int] | None,
                  max_len: int) -> dict[str, np.ndarray]:
    """Model inputs, per-token `labels` (IGNORE off first sub-tokens) and `first_token`
    [batch, words] (the position of each word's first sub-token, -1 when truncated away)."""
    enc = encode_words(tokenizer, words, max_len)
    labels = np.full(enc["input_ids"].shape, IGNORE, dtype=np.int32)
    for row, positions in enumerate(enc["first_token"] if tags is not None else ()):
        for word, position in enumerate(positions[: len(tags[row])]):
            if position >= 0:
                labels[row, position] = index[tags[row][word]]
    return {**enc, "labels": labels}


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
