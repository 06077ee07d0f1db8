"""The in-graph TF tokenizer and the TF-free `tokenizers` one agree exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tfllm_serving.wordpiece import (
    build_bert_tokenizer,
    encode_batch,
    load_tokenizer,
    read_vocab,
)

from tfllm.data.readers import ReadReport, read_conll
from tfllm.tokenization.tf_tokenizer import InGraphTokenizer
from tfllm.tokenization.vocab import train_wordpiece, vocab_list

HARD_STRINGS = [
    "Café déjà vu — naïve façade, Ångström and Øresund",
    "中文字符和日本語のテキスト、한국어 텍스트",
    "mixed 中a文b text",
    "emoji 😀👍🏽 and a family 👨‍👩‍👧 🇫🇷",
    "https://example.com/path?q=1&lang=en#frag and user@mail.org",
    "",
    "   \t   ",
    "\n\n",
    "x" * 10_000,
    " ".join(["antidisestablishmentarianism"] * 1500)[:10_000],
    "Ǆ ǅ İstanbul ß ﬁ ΟΔΟΣ Ⅻ ＡＢＣ",
    "a\x01b\u200bc\ufeffd\u00adé",
    "tab\tseparated\nnew line\r\nwindows",
    "\u00a0non-breaking\u3000ideographic space",
    "punctuation!!! ... ??? (brackets) [more] {curly} «quotes» “smart” ‘single’",
    "numbers 3.14159 1,000,000 -42 +7 1e-9 ½ ² ٣",
    "Arabic مرحبا Hebrew שלום Hindi नमस्ते Thai สวัสดี",
    "ALL CAPS SHOUTING AND lower and MiXeD",
]


def conll_sentences(path: Path) -> list[str]:
    return [" ".join(s.words) for s in read_conll(path, ReadReport())]


def assert_same(hf_tokenizer, tf_tokenizer, texts, pairs=None, max_len=64):
    expected = encode_batch(hf_tokenizer, texts, pairs, max_len=max_len)
    got = tf_tokenizer(tf.constant(texts), None if pairs is None else tf.constant(pairs))
    for key, want in expected.items():
        have = got[key].numpy()
        assert have.shape == want.shape, (key, have.shape, want.shape)
        rows = np.nonzero((have != want).any(axis=1))[0]
        assert rows.size == 0, (
            f"{key} differs on {rows.size} rows, first {texts[rows[0]][:80]!r}: "
            f"tf {have[rows[0]][:24].tolist()} vs tokenizers {want[rows[0]][:24].tolist()}"
        )


@pytest.fixture(scope="module")
def trained_vocab(data_dir: Path) -> list[str]:
    texts = (data_dir / "wikitext2" / "wiki.valid.tokens").read_text(encoding="utf-8").splitlines()
    texts += HARD_STRINGS
    return vocab_list(train_wordpiece(texts, vocab_size=6000))


@pytest.fixture(scope="module")
def texts(data_dir: Path, sst2_dev_sentences: list[str]) -> dict[str, list[str]]:
    return {
        "sst2_dev": sst2_dev_sentences,
        "conll_valid": conll_sentences(data_dir / "conll2003" / "valid.txt"),
        "hard": HARD_STRINGS,
    }


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
@pytest.mark.parametrize("corpus", ["sst2_dev", "conll_valid", "hard"])
def test_single_texts_get_identical_ids_masks_and_segments(trained_vocab, texts, corpus, lowercase):
    hf = build_bert_tokenizer(trained_vocab, lowercase)
    tf_tok = InGraphTokenizer(trained_vocab, max_len=64, lowercase=lowercase)
    assert_same(hf, tf_tok, texts[corpus])


@pytest.mark.parametrize("max_len", [16, 33, 128])
@pytest.mark.parametrize("corpus", ["sst2_dev", "conll_valid", "hard"])
def test_pairs_are_truncated_longest_first_identically(trained_vocab, texts, corpus, max_len):
    first = texts[corpus]
    second = first[7:] + first[:7]  # pairs of different lengths, both sides truncated
    hf = build_bert_tokenizer(trained_vocab)
    tf_tok = InGraphTokenizer(trained_vocab, max_len=max_len)
    assert_same(hf, tf_tok, first, second, max_len=max_len)


def test_truncation_keeps_cls_and_sep_within_max_len(trained_vocab):
    tf_tok = InGraphTokenizer(trained_vocab, max_len=16)
    out = tf_tok(tf.constant(["word " * 100]), tf.constant(["other " * 3]))
    ids = out["input_ids"].numpy()[0].tolist()
    cls, sep = trained_vocab.index("[CLS]"), trained_vocab.index("[SEP]")
    assert len(ids) == 16 and ids[0] == cls and ids.count(sep) == 2 and ids[-1] == sep
    assert out["token_type_ids"].numpy()[0].tolist()[-4:] == [1, 1, 1, 1]


def test_padding_to_max_len_matches_the_tf_free_tokenizer(trained_vocab, texts):
    hf = build_bert_tokenizer(trained_vocab)
    expected = encode_batch(hf, texts["sst2_dev"][:50], max_len=128, pad_to_max_len=True)
    tf_tok = InGraphTokenizer(trained_vocab, max_len=128, pad_to_max_len=True)
    got = tf_tok(tf.constant(texts["sst2_dev"][:50]))
    assert got["input_ids"].shape == (50, 128)
    np.testing.assert_array_equal(got["input_ids"].numpy(), expected["input_ids"])


@pytest.mark.parametrize("corpus", ["sst2_dev", "conll_valid", "hard"])
def test_real_minilm_vocab_gives_identical_ids_to_its_own_tokenizer_json(minilm_dir, texts, corpus):
    hf = load_tokenizer(minilm_dir)  # the checkpoint's own tokenizer.json
    vocab = read_vocab(minilm_dir / "vocab.txt")
    assert_same(hf, InGraphTokenizer(vocab, max_len=128), texts[corpus], max_len=128)
    pairs = texts[corpus][3:] + texts[corpus][:3]
    assert_same(hf, InGraphTokenizer(vocab, max_len=48), texts[corpus], pairs, max_len=48)
