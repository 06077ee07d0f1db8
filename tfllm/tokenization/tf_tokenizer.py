"""The in-graph BERT tokenizer (tensorflow-text FastBertTokenizer) for training and SavedModels.

Gives the same ids, attention mask and segment ids as `tfllm_serving.wordpiece`
(Rust `tokenizers` from the same vocab), including pair truncation, so a model
trained with one can be served with the other.

Example:

>>> import tensorflow as tf
>>> from tfllm.tokenization.tf_tokenizer import InGraphTokenizer
>>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film", "##s"]
>>> tok = InGraphTokenizer(vocab, max_len=8)
>>> tok(tf.constant(["Good films", "film"]))["input_ids"].numpy().tolist()
[[2, 5, 6, 7, 3], [2, 6, 3, 0, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_text as tf_text
from tfllm_serving.wordpiece import MAX_CHARS_PER_WORD, TRUNCATIONS

# BERT's text cleaning (as in `tokenizers`' BertNormalizer) deletes NUL, U+FFFD and
# control/format/private-use characters except tab and line breaks; FastBertTokenizer
# turns them into spaces instead, so delete them first to get the same words.
_DELETED = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\x{fffd}\p{Cf}\p{Co}]"
# Uncased BERT strips accents (NFD, drop Mn) then lowercases char by char. FastBertTokenizer's
# own lowercasing is NFKC case folding (Ǆ -> dz, ß -> ss), and tf.strings.lower applies the
# context-sensitive final sigma, so both are avoided: Σ is mapped to σ before lowering.
_MARKS = r"\p{Mn}"


class InGraphTokenizer(tf.Module):
    """Raw strings (and optional pairs) -> `input_ids`, `attention_mask`, `token_type_ids`.

    Rows are padded with 0 to the batch's longest row, or to `max_len` with
    `pad_to_max_len=True`; pairs are truncated longest-first, exactly like
    `tokenizers`' `longest_first` strategy; `truncation="head_tail"` keeps a long single
    text's head and tail as `tfllm_serving.wordpiece.encode_batch` does.
    """

    def __init__(
        self,
        vocab: Sequence[str],
        max_len: int = 128,
        lowercase: bool = True,
        pad_to_max_len: bool = False,
        truncation: str = "head",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if max_len < 4:
            raise ValueError(f"max_len must be at least 4, got {max_len}")
        vocab = list(vocab)
        self.max_len = max_len
        self.pad_to_max_len = pad_to_max_len
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        self.truncation = truncation
        self.lowercase = lowercase
        self.cls_id = vocab.index("[CLS]")
        self.sep_id = vocab.index("[SEP]")
        self.tokenizer = tf_text.FastBertTokenizer(
            vocab=vocab,
            suffix_indicator="##",
            max_bytes_per_word=MAX_CHARS_PER_WORD,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
            lower_case_nfd_strip_accents=False,
        )

    def _wordpieces(self, text: tf.Tensor) -> tf.RaggedTensor:
        text = tf.strings.regex_replace(text, _DELETED, "")
        if self.lowercase:
            text = tf.strings.regex_replace(tf_text.normalize_utf8(text, "NFD"), _MARKS, "")
            text = tf.strings.lower(tf.strings.regex_replace(text, "Σ", "σ"), encoding="utf-8")
        return self.tokenizer.tokenize(text)

    def _head_tail(self, pieces: tf.RaggedTensor) -> tf.RaggedTensor:
        """Rows longer than the budget keep their first `max_len // 4 - 1` and last
        `max_len - max_len // 4 - 1` word pieces ([CLS] and [SEP] fill the rest)."""
        head = max(1, self.max_len // 4) - 1
        tail = self.max_len - 2 - head
        lengths = tf.expand_dims(pieces.row_lengths(), 1)
        positions = tf.ragged.range(pieces.row_lengths())
        keep = (lengths <= self.max_len - 2) | (positions < head) | (positions >= lengths - tail)
        return tf.ragged.boolean_mask(pieces, keep)

    def __call__(self, text: tf.Tensor, text_pair: tf.Tensor | None = None) -> dict:
        a = self._wordpieces(text)
        if text_pair is None:
            a = self._head_tail(a) if self.truncation == "head_tail" else a[:, : self.max_len - 2]
            ids = _concat([_fill_like(a, self.cls_id, 1), a, _fill_like(a, self.sep_id, 1)])
            types = tf.zeros_like(ids)
        else:
            b = self._wordpieces(text_pair)
            keep_a, keep_b = _longest_first(a.row_lengths(), b.row_lengths(), self.max_len - 3)
            a = _truncate_rows(a, keep_a)
            b = _truncate_rows(b, keep_b)
            cls, sep = _fill_like(a, self.cls_id, 1), _fill_like(a, self.sep_id, 1)
            ids = _concat([cls, a, sep, b, sep])
            types = _concat([tf.zeros_like(cls), tf.zeros_like(a), tf.zeros_like(sep),
                             tf.ones_like(b), tf.ones_like(sep)])
        width = self.max_len if self.pad_to_max_len else None
        shape = [None, width]
        return {
            "input_ids": ids.to_tensor(0, shape=shape),
            "attention_mask": tf.ones_like(ids).to_tensor(0, shape=shape),
            "token_type_ids": types.to_tensor(0, shape=shape),
        }


def _fill_like(rt: tf.RaggedTensor, value: int, width: int) -> tf.RaggedTensor:
    rows = rt.nrows()
    return tf.RaggedTensor.from_tensor(tf.fill(tf.stack([rows, width]), tf.constant(value, rt.dtype)))


def _concat(parts: list[tf.RaggedTensor]) -> tf.RaggedTensor:
    return tf.concat(parts, axis=1)


def _truncate_rows(rt: tf.RaggedTensor, keep: tf.Tensor) -> tf.RaggedTensor:
    positions = tf.ragged.range(rt.row_lengths())
    return tf.ragged.boolean_mask(rt, positions < tf.expand_dims(keep, 1))


def _longest_first(len_a: tf.Tensor, len_b: tf.Tensor, budget: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-row kept lengths, mirroring `tokenizers`' LongestFirst truncation:
    if the shorter side fits in half the budget it is kept whole and the longer
    side gets the rest; otherwise the budget is halved, the longer side (or, on a
    tie, the second text) getting the odd token."""
    budget = tf.constant(budget, len_a.dtype)
    fits = len_a + len_b <= budget
    shorter = tf.minimum(len_a, len_b)
    short_fits_half = 2 * shorter <= budget
    half, rest = budget // 2, budget - budget // 2
    a_is_longer = len_a > len_b
    keep_a = tf.where(
        short_fits_half,
        tf.where(a_is_longer, budget - shorter, len_a),
        tf.where(a_is_longer, rest, half),
    )
    keep_b = tf.where(
        short_fits_half,
        tf.where(a_is_longer, len_b, budget - shorter),
        tf.where(a_is_longer, half, rest),
    )
    return tf.where(fits, len_a, keep_a), tf.where(fits, len_b, keep_b)
