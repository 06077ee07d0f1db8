"""Token classification (NER) data: words -> sub-tokens with labels on the first sub-token.

The loss sees one label per word (its first sub-token); the other sub-tokens, [CLS],
[SEP] and padding carry `IGNORE` and are skipped (`ignore_class` in the Keras loss).
Predictions go back to words the same way: a word's tag is its first sub-token's.

Example:

>>> from tfllm.finetune.tagging import encode_tagged, words_from_token_predictions
>>> from tfllm.tokenization.wordpiece import build_bert_tokenizer
>>> tok = build_bert_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "new",
...                             "york", "##er", "lives"])
>>> enc = encode_tagged(tok, [["Yorker", "lives"]], [["B-X", "O"]], {"B-X": 0, "O": 1}, 8)
>>> enc["labels"][0].tolist()   # [CLS] york ##er lives [SEP] (padding)
[-100, 0, -100, 1, -100]
>>> words_from_token_predictions(enc["first_token"], [[9, 0, 9, 1, 9]], ["B-X", "O"], [2])
[['B-X', 'O']]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

IGNORE = -100


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


def words_from_token_predictions(first_token: np.ndarray, token_predictions, names: list[str],
                                 word_counts: Sequence[int], fill: str = "O") -> list[list[str]]:
    """One tag per word from per-token class ids; words cut off by max_len get `fill`."""
    tags = []
    for row, count in enumerate(word_counts):
        positions = first_token[row][:count]
        tags.append([names[int(token_predictions[row][p])] if p >= 0 else fill
                     for p in positions])
    return tags
