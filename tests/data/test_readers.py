"""Readers skip and count bad records with their line numbers; unusable files fail fast."""

from __future__ import annotations

import pytest

from tfllm.data.readers import ReadReport, read_conll, read_corpus, read_delimited, read_text
from tfllm.errors import InputError


def texts(paths, **kwargs):
    report = ReadReport()
    return [d.text for d in read_corpus(paths, report, **kwargs)], report


def test_plain_text_blocks_are_documents_and_lines_mode_gives_one_per_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first para line one\nline two\n\n \n\nsecond para\n")
    assert texts([path])[0] == ["first para line one\nline two", "second para"]
    assert texts([path], text_mode="lines")[0] == ["first para line one", "line two", "second para"]


def test_invalid_utf8_line_is_skipped_and_counted_with_its_line_number(tmp_path, capsys):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good line\n\xff\xfe broken\nanother good\n")
    docs, report = texts([path], text_mode="lines")
    assert docs == ["good line", "another good"]
    assert report.bad_records == 1 and f"{path}:2: invalid UTF-8" in report.examples[0]
    assert f"{path}:2" in capsys.readouterr().err


def test_jsonl_lines_that_are_not_json_or_lack_the_field_are_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "a"}\n{"body": "b"\n[1, 2]\n{"body": 3}\n\n{"body": "c"}\n')
    docs, report = texts([path], field_name="body")
    assert docs == ["a", "c"]
    assert report.bad_records == 3
    assert [m.split(":")[1] for m in report.examples] == ["2", "3", "4"]


def test_ragged_csv_row_is_skipped_with_its_line_and_quoted_newlines_survive(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('text,label\n"hello, world",1\nragged,row,extra\n"multi\nline",0\nok,1\n')
    report = ReadReport()
    docs = [d.text for d in read_delimited(path, report)]
    assert docs == ["hello, world", "multi\nline", "ok"]
    assert report.bad_records == 1 and ":3: expected 2 fields, found 3" in report.examples[0]


def test_real_sst2_tsv_header_is_detected_and_text_column_chosen(data_dir):
    docs, report = texts([data_dir / "sst2" / "dev.tsv"])
    assert len(docs) == 872 and report.bad_records == 0
    assert docs[0] == "one long string of cliches ."


def test_real_banking77_csv_by_column_name_and_by_index(data_dir):
    path = data_dir / "banking77" / "test.csv"
    by_name, report = texts([path], column="category")
    by_index, _ = texts([path], column=1)
    assert len(by_name) == 3080 and report.bad_records == 0
    assert by_name == by_index and "card_arrival" in by_name


def test_headerless_tsv_uses_column_index(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("0\tfirst text\n1\tsecond text\n")
    docs, _ = texts([path], column=1)
    assert docs == ["first text", "second text"]


def test_column_by_name_that_does_not_exist_names_the_file_and_columns(data_dir):
    with pytest.raises(InputError, match=r"dev\.tsv: no column 'review' \(columns: sentence, label\)"):
        texts([data_dir / "sst2" / "dev.tsv"], column="review")


def test_missing_file_and_directory_fail_before_reading(tmp_path):
    good = tmp_path / "ok.txt"
    good.write_text("text\n")
    with pytest.raises(InputError, match="file not found: .*missing.txt"):
        read_corpus([good, tmp_path / "missing.txt"])
    with pytest.raises(InputError, match="is a directory"):
        read_corpus([tmp_path])


def test_real_conll_validation_reads_every_sentence(data_dir):
    report = ReadReport()
    sentences = list(read_conll(data_dir / "conll2003" / "valid.txt", report))
    assert len(sentences) == 3250 and report.bad_records == 0
    assert sentences[0].words == ["CRICKET", "-", "LEICESTERSHIRE", "TAKE", "OVER", "AT", "TOP",
                                  "AFTER", "INNINGS", "VICTORY", "."]
    assert sentences[0].tags[2] == "B-ORG"


def test_malformed_conll_line_drops_only_its_sentence(tmp_path):
    path = tmp_path / "c.conll"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nbroken line\nx NN B-NP O\n\n"
                    "Peter NNP B-NP B-PER\n")
    report = ReadReport()
    sentences = list(read_conll(path, report))
    assert [s.words for s in sentences] == [["EU", "rejects"], ["Peter"]]
    assert report.bad_records == 1 and ":4: expected 4 columns, found 2" in report.examples[0]


def test_each_conll_word_keeps_its_own_line_number_across_a_skipped_line(tmp_path):
    path = tmp_path / "c.conll"
    path.write_bytes(b"EU B-ORG\n-DOCSTART- O\n\xff\xfe B-X\nrejects O\n\nPeter B-PER\n")
    sentences = list(read_conll(path, ReadReport()))
    assert [(s.words, s.lines) for s in sentences] == [(["EU", "rejects"], [1, 4]), (["Peter"], [6])]
    assert sentences[1].line == 6


def test_empty_file_yields_nothing(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    assert list(read_text(path, ReadReport())) == []
