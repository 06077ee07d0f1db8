"""The one TF-free BERT WordPiece encoder (Rust `tokenizers`): training, the export gate and
the server all turn text into ids here, so a served model sees what it was measured on.

`tokenizer.json` is the source of truth; `build_bert_tokenizer` makes one from a
`vocab.txt` with BERT's normalizer, pre-tokenizer and special-token template, so every
checkpoint (ours, keras-hub presets, Hugging Face dirs) gets the same pipeline as the
in-graph TF tokenizer built from the same vocab. Two truncations: `head` keeps the first
max_len tokens (pairs: longest first); `head_tail` keeps the first quarter and the last
three quarters of the budget (Sun et al. 2019: long reviews conclude at the end).
Token classification reads a text as whitespace-separated words (as CoNLL files give
them) and marks each word's first sub-token.

Imports only numpy and `tokenizers`, so it runs wherever `tfllm_serving` runs.

Example:

>>> from tfllm_serving.wordpiece import build_bert_tokenizer, encode_batch, encode_words
>>> tok = build_bert_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film",
...                             "##s", "a", "b", "c"])
>>> enc = encode_batch(tok, ["Good films", "film"], max_len=8)
>>> enc["input_ids"].tolist(), enc["attention_mask"].tolist()
([[2, 5, 6, 7, 3], [2, 6, 3, 0, 0]], [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
>>> long = encode_batch(tok, ["a a a b b c c c"], max_len=8, truncation="head_tail")
>>> long["input_ids"].tolist()   # [CLS] a | b b c c c [SEP]: 2 of 8 from the head, 6 from the tail
[[2, 8, 9, 9, 10, 10, 10, 3]]
>>> words = encode_words(tok, [["Good", "films", "b"]], max_len=4)
>>> words["input_ids"].tolist(), words["first_token"].tolist()   # "b" is cut off: -1
([[2, 5, 6, 3]], [[1, 2, -1]])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from .errors import InvalidInput

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_CHARS_PER_WORD = 100
TRUNCATIONS = ("head", "head_tail")
ID_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def read_vocab(path: str | Path) -> list[str]:
    """Tokens of a `vocab.txt`, one per line, in id order."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"vocab file not found: {path}")
    tokens = path.read_text(encoding="utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    for special in ("[UNK]", "[CLS]", "[SEP]"):
        if special not in tokens:
            raise InvalidInput(f"{path}: vocab has no {special} token")
    return tokens


def build_bert_tokenizer(vocab: Sequence[str], lowercase: bool = True) -> Tokenizer:
    """A BERT tokenizer (uncased strips accents, like the original BERT) from a vocab list."""
    tokenizer = Tokenizer(
        WordPiece(
            {token: i for i, token in enumerate(vocab)},
            unk_token="[UNK]",
            max_input_chars_per_word=MAX_CHARS_PER_WORD,
        )
    )
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def is_lowercase(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer's BERT normalizer lowercases."""
    normalizer = json.loads(tokenizer.to_str()).get("normalizer") or {}
    return bool(normalizer.get("lowercase", False))


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """`tokenizer.json` from a directory, or one built from its `vocab.txt`.

    Without a tokenizer.json, casing follows a `tokenizer_config.json`
    (`do_lower_case`) when present, else lowercase.
    """
    directory = Path(directory)
    if (directory / "tokenizer.json").is_file():
        try:
            return Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as err:
            raise InvalidInput(f"{directory / 'tokenizer.json'}: cannot be loaded ({err})") from err
    if (directory / "vocab.txt").is_file():
        lowercase = True
        config = directory / "tokenizer_config.json"
        if config.is_file():
            lowercase = bool(json.loads(config.read_text()).get("do_lower_case", True))
        return build_bert_tokenizer(read_vocab(directory / "vocab.txt"), lowercase)
    raise InvalidInput(f"{directory}: no tokenizer.json or vocab.txt")


def encode_batch(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    max_len: int = 128,
    pad_to_max_len: bool = False,
    truncation: str | None = "head",
) -> dict[str, np.ndarray]:
    """`input_ids`, `attention_mask`, `token_type_ids` as int32 [batch, length] arrays.

    `truncation`: `head` (pairs longest first), `head_tail` (single texts), or None to keep
    every token (the caller rejects rows over max_len). Rows are padded with id 0 to the
    batch's longest row, or to `max_len`.
    """
    if truncation not in (*TRUNCATIONS, None):
        raise InvalidInput(f"truncation must be one of {', '.join(TRUNCATIONS)}, not {truncation!r}")
    if pairs is not None and len(pairs) != len(texts):
        raise InvalidInput(f"{len(texts)} texts but {len(pairs)} text pairs")
    if pairs is not None and truncation == "head_tail":
        raise InvalidInput("head_tail truncation is for single texts, not pairs")
    _configure(tokenizer, max_len if truncation == "head" else None, padded=False)
    inputs = list(zip(texts, pairs, strict=True)) if pairs is not None else list(texts)
    encodings = tokenizer.encode_batch(inputs) if inputs else []
    rows = [(e.ids, e.type_ids) for e in encodings]
    if truncation == "head_tail":
        head = max(1, max_len // 4)  # [CLS] is in the head, [SEP] in the tail
        rows = [(ids[:head] + ids[len(ids) - (max_len - head):], types[:max_len])
                if len(ids) > max_len else (ids, types) for ids, types in rows]
    width = max_len if pad_to_max_len else max((len(ids) for ids, _ in rows), default=0)
    out = {key: np.zeros((len(rows), width), dtype=np.int32) for key in ID_KEYS}
    for i, (ids, types) in enumerate(rows):
        out["input_ids"][i, : len(ids)] = ids
        out["attention_mask"][i, : len(ids)] = 1
        out["token_type_ids"][i, : len(ids)] = types
    return out


def encode_words(
    tokenizer: Tokenizer, words: Sequence[Sequence[str]], max_len: int
) -> dict[str, np.ndarray]:
    """Pre-split words -> the id arrays (truncated to max_len, padded to the longest row)
    and `first_token` [batch, most words]: the position of each word's first sub-token, -1
    for a word with none (cut off by max_len, or empty once normalized)."""
    _configure(tokenizer, max_len, padded=True)
    encodings = tokenizer.encode_batch([list(w) for w in words], is_pretokenized=True)
    width = len(encodings[0].ids) if encodings else 0
    first = np.full((len(encodings), max((len(w) for w in words), default=0)), -1, np.int32)
    for row, encoding in enumerate(encodings):
        for position, word in enumerate(encoding.word_ids):
            if word is not None and first[row, word] < 0:
                first[row, word] = position
    out = {key: np.array([getattr(e, attr) for e in encodings], dtype=np.int32).reshape(-1, width)
           for key, attr in zip(ID_KEYS, ("ids", "attention_mask", "type_ids"), strict=True)}
    return {**out, "first_token": first}


def _configure(tokenizer: Tokenizer, max_len: int | None, padded: bool) -> None:
    """Truncation (longest first, at max_len; None = off) and padding to the longest row,
    changed only when they differ: a server's threads share one tokenizer, and changing it
    while another thread encodes fails ("Already borrowed")."""
    truncation = tokenizer.truncation
    if max_len is None:
        if truncation is not None:
            tokenizer.no_truncation()
    elif truncation is None or (truncation["max_length"], truncation["strategy"]) != (
            max_len, "longest_first"):
        tokenizer.enable_truncation(max_length=max_len, strategy="longest_first")
    padding = tokenizer.padding or {}
    if padded and (padding.get("pad_id") != 0 or padding.get("length") is not None):
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    elif not padded and tokenizer.padding is not None:
        tokenizer.no_padding()
