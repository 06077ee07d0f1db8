"""The TF-free BERT WordPiece tokenizer (Rust `tokenizers`), as the server runs it.

`tokenizer.json` is the source of truth on the serving side; `build_bert_tokenizer`
makes one from a `vocab.txt` with BERT's normalizer, pre-tokenizer and special-token
template, so every checkpoint (ours, keras-hub presets, Hugging Face dirs) gets the
same pipeline as the in-graph TF tokenizer built from the same vocab.

Example:

>>> from tfllm.tokenization.wordpiece import build_bert_tokenizer, encode_batch
>>> tok = build_bert_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film", "##s"])
>>> enc = encode_batch(tok, ["Good films", "film"], max_len=8)
>>> enc["input_ids"].tolist(), enc["attention_mask"].tolist()
([[2, 5, 6, 7, 3], [2, 6, 3, 0, 0]], [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from tfllm.errors import InputError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_CHARS_PER_WORD = 100


def read_vocab(path: str | Path) -> list[str]:
    """Tokens of a `vocab.txt`, one per line, in id order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"vocab file not found: {path}")
    tokens = path.read_text(encoding="utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    for special in ("[UNK]", "[CLS]", "[SEP]"):
        if special not in tokens:
            raise InputError(f"{path}: vocab has no {special} token")
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
            raise InputError(f"{directory / 'tokenizer.json'}: cannot be loaded ({err})") from err
    if (directory / "vocab.txt").is_file():
        lowercase = True
        config = directory / "tokenizer_config.json"
        if config.is_file():
            lowercase = bool(json.loads(config.read_text()).get("do_lower_case", True))
        return build_bert_tokenizer(read_vocab(directory / "vocab.txt"), lowercase)
    raise InputError(f"{directory}: no tokenizer.json or vocab.txt")


def encode_batch(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    pairs: Sequence[str] | None = None,
    max_len: int = 128,
    pad_to_max_len: bool = False,
) -> dict[str, np.ndarray]:
    """`input_ids`, `attention_mask`, `token_type_ids` as int32 [batch, length] arrays.

    Pairs are truncated longest-first to `max_len`; rows are padded with id 0 to the
    batch's longest row (or to `max_len`).
    """
    if pairs is not None and len(pairs) != len(texts):
        raise InputError(f"{len(texts)} texts but {len(pairs)} text pairs")
    tokenizer.enable_truncation(max_length=max_len, strategy="longest_first")
    if pad_to_max_len:
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]", length=max_len)
    else:
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    inputs = list(zip(texts, pairs, strict=True)) if pairs is not None else list(texts)
    encodings = tokenizer.encode_batch(inputs) if inputs else []
    width = len(encodings[0].ids) if encodings else 0

    def stack(attr: str) -> np.ndarray:
        return np.array([getattr(e, attr) for e in encodings], dtype=np.int32).reshape(-1, width)

    return {
        "input_ids": stack("ids"),
        "attention_mask": stack("attention_mask"),
        "token_type_ids": stack("type_ids"),
    }
