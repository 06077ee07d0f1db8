"""Normalization, filters and sentence splitting on real and hand-written text."""

from __future__ import annotations

from tfllm.data.corpus import CorpusStats, clean_documents
from tfllm.data.filters import FilterOptions, rejection_reason, symbol_ratio
from tfllm.data.normalize import NormalizeOptions, normalize
from tfllm.data.readers import ReadReport, read_corpus
from tfllm.data.sentences import split_sentences


def test_nfc_composes_and_nfkc_also_folds_compatibility_forms():
    text = "Cafe\u0301 \ufb01le \uff21"
    assert normalize(text, NormalizeOptions(unicode_form="NFC")) == "Caf\u00e9 \ufb01le \uff21"
    assert normalize(text, NormalizeOptions(unicode_form="NFKC")) == "Caf\u00e9 file A"
    assert normalize(text, NormalizeOptions(unicode_form=None)) == text


def test_markup_is_stripped_but_wikitext_placeholders_are_kept():
    text = "<p>Great <b>film</b>!<br />Really &amp; truly</p><!-- c --><script>x()</script> <unk>"
    assert normalize(text, NormalizeOptions()) == "Great film! Really & truly <unk>"
    assert "<b>" in normalize(text, NormalizeOptions(strip_markup=False))


def test_control_characters_go_and_whitespace_collapses_keeping_line_breaks():
    text = "a\x00b\x07c\u200b d \t\t e\n\n\n  f  \r"
    assert normalize(text, NormalizeOptions()) == "abc d e\nf"


def test_real_imdb_review_loses_its_br_tags(data_dir):
    report = ReadReport()
    docs = read_corpus([data_dir / "imdb" / "test.tsv"], report)
    review = next(d.text for d in docs if "<br />" in d.text)
    cleaned = normalize(review, NormalizeOptions())
    assert "<br" not in cleaned and len(cleaned) > 0.9 * len(review.replace("<br />", ""))


def test_filters_name_the_reason():
    opts = FilterOptions(min_chars=10, max_chars=50, max_symbol_ratio=0.3)
    assert rejection_reason("short", opts) == "too_short"
    assert rejection_reason("x" * 51, opts) == "too_long"
    assert rejection_reason("= = = Heading = = =", opts) == "symbols"
    assert rejection_reason("A perfectly normal sentence.", opts) is None
    assert symbol_ratio("") == 0.0


def test_sentence_splitting_of_real_wikitext_respects_initials():
    paragraph = (
        "Homarus gammarus , known as the European lobster , is a species of <unk> lobster . "
        "It is closely related to the American lobster , H. americanus . It may grow to 60 cm ."
    )
    assert split_sentences(paragraph) == [
        "Homarus gammarus , known as the European lobster , is a species of <unk> lobster .",
        "It is closely related to the American lobster , H. americanus .",
        "It may grow to 60 cm .",
    ]
    assert split_sentences("Mr. Smith arrived. He left?  Yes!\nNext") == [
        "Mr. Smith arrived.", "He left?", "Yes!", "Next"]


def test_pipeline_counts_each_removal_on_real_wikitext(data_dir):
    report, stats = ReadReport(), CorpusStats()
    docs = list(clean_documents(read_corpus([data_dir / "wikitext2" / "wiki.valid.tokens"], report),
                                stats))
    assert stats.documents_in == report.records
    removed = (sum(stats.filtered.values()) + stats.exact_duplicates + stats.near_duplicates)
    assert stats.documents_out == len(docs) == stats.documents_in - removed
    assert stats.filtered["too_short"] > 0 and stats.exact_duplicates > 0
    assert all(len(d.text) >= 20 for d in docs)
