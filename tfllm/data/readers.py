"""Readers for plain text, JSONL, CSV/TSV and CoNLL files.

A reader yields records and never crashes in the middle of a file: a bad record
(invalid UTF-8, a line that is not JSON, a ragged CSV row, a malformed CoNLL line)
is counted in a `ReadReport` with its file and line, and skipped. A file that
cannot be read at all (missing, a directory) raises `InputError`.

Example:

>>> import pathlib, tempfile
>>> from tfllm.data.readers import ReadReport, read_corpus
>>> p = pathlib.Path(tempfile.mkdtemp()) / "c.jsonl"
>>> _ = p.write_bytes(b'{"text": "one"}\\nnot json\\n{"text": "two"}\\n')
>>> report = ReadReport()
>>> [d.text for d in read_corpus([p], report=report)], report.bad_records
(['one', 'two'], 1)
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tfllm.errors import InputError

TEXT_COLUMN_NAMES = ("text", "sentence", "content", "review", "document", "body")


@dataclass
class Document:
    """One unit of text with where it came from (for error messages and stats)."""

    text: str
    source: str
    line: int


@dataclass
class ReadReport:
    """Counts of what was read and what was skipped, with the first few reasons."""

    files: int = 0
    records: int = 0
    bad_records: int = 0
    examples: list[str] = field(default_factory=list)
    max_examples: int = 20
    strict: bool = False  # raise on the first bad record (labelled data) instead of skipping

    def bad(self, path: Path | str, line: int, reason: str) -> None:
        self.bad_records += 1
        message = f"{path}:{line}: {reason}"
        if self.strict:
            raise InputError(message)
        if len(self.examples) < self.max_examples:
            self.examples.append(message)
            print(f"skipped {message}", file=sys.stderr)


def check_readable(path: str | Path) -> Path:
    """Raise a one-line `InputError` unless `path` is an existing regular file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory; expected a file")
    return path


def _decoded_lines(path: Path, report: ReadReport) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) for each line that is valid UTF-8; count the others."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                report.bad(path, number, f"invalid UTF-8 at byte {err.start}")
                continue
            if number == 1:
                text = text.removeprefix("\ufeff")
            yield number, text.rstrip("\r\n")


def read_text(path: str | Path, report: ReadReport, mode: str = "blocks") -> Iterator[Document]:
    """Plain text: one document per blank-line-separated block (`blocks`) or per line."""
    path = check_readable(path)
    if mode not in ("blocks", "lines"):
        raise InputError(f"text mode must be 'blocks' or 'lines', got {mode!r}")
    block: list[str] = []
    start = 0
    for number, line in _decoded_lines(path, report):
        if mode == "lines":
            if line.strip():
                report.records += 1
                yield Document(line, str(path), number)
            continue
        if line.strip():
            if not block:
                start = number
            block.append(line)
        elif block:
            report.records += 1
            yield Document("\n".join(block), str(path), start)
            block = []
    if block:
        report.records += 1
        yield Document("\n".join(block), str(path), start)


def json_lines(path: Path, report: ReadReport) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) per non-blank JSONL line; invalid JSON is a bad record."""
    for number, line in _decoded_lines(path, report):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            report.bad(path, number, f"not valid JSON ({err.msg})")


def read_jsonl(path: str | Path, report: ReadReport, field_name: str = "text") -> Iterator[Document]:
    """JSONL: one JSON object per line, text taken from `field_name`."""
    path = check_readable(path)
    for number, obj in json_lines(path, report):
        if not isinstance(obj, dict) or field_name not in obj:
            report.bad(path, number, f"no field '{field_name}'")
            continue
        if not isinstance(obj[field_name], str):
            report.bad(path, number, f"field '{field_name}' is not a string")
            continue
        report.records += 1
        yield Document(obj[field_name], str(path), number)


def resolve_column(column: str | int | None, header: list[str] | None, path: Path) -> int:
    if isinstance(column, int) or (isinstance(column, str) and column.isdigit()):
        return int(column)
    if header is None:
        if column is None:
            return 0
        raise InputError(f"{path}: column '{column}' given by name but the file has no header")
    if column is None:
        for name in TEXT_COLUMN_NAMES:
            if name in header:
                return header.index(name)
        return 0
    if column not in header:
        raise InputError(f"{path}: no column '{column}' (columns: {', '.join(header)})")
    return header.index(column)


def read_delimited_rows(
    path: str | Path,
    report: ReadReport,
    delimiter: str | None = None,
    header: bool | None = None,
) -> tuple[list[str] | None, Iterator[tuple[int, list[str]]]]:
    """CSV/TSV rows with their line numbers; rows with the wrong field count are skipped.

    `delimiter` defaults from the extension (tab for .tsv); `header=None` sniffs it.
    """
    path = check_readable(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    lines = _decoded_lines(path, report)
    first = next(lines, None)
    if first is None:
        return (None, iter(()))
    # TSV files such as GLUE's carry unbalanced quotes inside text: no quoting there.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL

    def parse(line: str) -> list[str]:
        return next(csv.reader(io.StringIO(line), delimiter=delimiter, quoting=quoting), [])

    first_number, first_line = first
    first_row = parse(first_line)
    has_header = header if header is not None else _looks_like_header(first_row)
    names = [c.strip() for c in first_row] if has_header else None
    width = len(first_row)

    def rows() -> Iterator[tuple[int, list[str]]]:
        pending = [] if has_header else [(first_number, first_line)]
        for number, line in _chain(pending, lines):
            if not line.strip():
                continue
            if quoting != csv.QUOTE_NONE:
                line = _join_open_quotes(line, lines)
            row = parse(line)
            if len(row) != width:
                report.bad(path, number, f"expected {width} fields, found {len(row)}")
                continue
            yield number, row

    return names, rows()


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


def _join_open_quotes(line: str, lines: Iterator[tuple[int, str]]) -> str:
    """Join physical lines while a quoted CSV field is still open (RFC 4180 newlines)."""
    while line.count('"') % 2 == 1:
        nxt = next(lines, None)
        if nxt is None:
            break
        line = line + "\n" + nxt[1]
    return line


def _looks_like_header(row: list[str]) -> bool:
    """A header names its columns: no cell is a number and at least one is a known name
    or every cell is a short identifier-like word."""
    cells = [c.strip() for c in row]
    if any(_is_number(c) for c in cells):
        return False
    if any(c.lower() in TEXT_COLUMN_NAMES + ("label", "labels", "category", "intent") for c in cells):
        return True
    return all(c and len(c) <= 32 and c.replace("_", "").replace(" ", "").isalnum() for c in cells)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_delimited(
    path: str | Path,
    report: ReadReport,
    column: str | int | None = None,
    delimiter: str | None = None,
    header: bool | None = None,
) -> Iterator[Document]:
    """CSV/TSV: text from `column` (name or index; default a text-like column or 0)."""
    path = check_readable(path)
    names, rows = read_delimited_rows(path, report, delimiter, header)
    index = resolve_column(column, names, path)
    for number, row in rows:
        if index >= len(row):
            report.bad(path, number, f"no column {index}")
            continue
        report.records += 1
        yield Document(row[index], str(path), number)


@dataclass
class TaggedSentence:
    """A CoNLL sentence: words and one tag per word, with each word's line number."""

    words: list[str]
    tags: list[str]
    source: str
    lines: list[int]

    @property
    def line(self) -> int:
        return self.lines[0]


def read_conll(
    path: str | Path, report: ReadReport, tag_column: int = -1
) -> Iterator[TaggedSentence]:
    """CoNLL column format: `token ... tag` per line, blank lines between sentences,
    `-DOCSTART-` lines ignored. A line with a different column count is skipped
    together with the rest of its sentence (its tags would be misaligned)."""
    path = check_readable(path)
    words: list[str] = []
    tags: list[str] = []
    lines: list[int] = []
    width = None
    broken = False
    for number, line in _decoded_lines(path, report):
        parts = line.split()
        if not parts:
            if words and not broken:
                report.records += 1
                yield TaggedSentence(words, tags, str(path), lines)
            words, tags, lines, broken = [], [], [], False
            continue
        if parts[0] == "-DOCSTART-":
            continue
        if width is None:
            width = len(parts)
        if len(parts) != width or width < 2:
            report.bad(path, number, f"expected {width} columns, found {len(parts)}")
            broken = True
            continue
        words.append(parts[0])
        tags.append(parts[tag_column])
        lines.append(number)
    if words and not broken:
        report.records += 1
        yield TaggedSentence(words, tags, str(path), lines)


def detect_format(path: str | Path) -> str:
    """`text`, `jsonl`, `csv`, `tsv` or `conll` from the file extension."""
    suffix = Path(path).suffix.lower()
    return {
        ".jsonl": "jsonl",
        ".json": "jsonl",
        ".ndjson": "jsonl",
        ".csv": "csv",
        ".tsv": "tsv",
        ".tab": "tsv",
        ".conll": "conll",
    }.get(suffix, "text")


def read_corpus(
    paths: Iterable[str | Path],
    report: ReadReport | None = None,
    fmt: str | None = None,
    field_name: str = "text",
    column: str | int | None = None,
    text_mode: str = "blocks",
) -> Iterator[Document]:
    """Documents from many files, each read by its format (from the extension by default).

    Every path is checked before the first document is read, so a missing file fails
    before any work starts.
    """
    report = report if report is not None else ReadReport()
    paths = [check_readable(p) for p in paths]
    if not paths:
        raise InputError("no corpus files given")
    kinds = [fmt or detect_format(p) for p in paths]
    for path, kind in zip(paths, kinds, strict=True):
        if kind not in ("jsonl", "csv", "tsv", "text", "conll"):
            raise InputError(f"unknown format {kind!r} for {path} (text, jsonl, csv, tsv, conll)")
    return _read_all(paths, kinds, report, field_name, column, text_mode)


def _read_all(paths, kinds, report, field_name, column, text_mode) -> Iterator[Document]:
    for path, kind in zip(paths, kinds, strict=True):
        report.files += 1
        if kind == "jsonl":
            yield from read_jsonl(path, report, field_name)
        elif kind in ("csv", "tsv"):
            yield from read_delimited(path, report, column, "\t" if kind == "tsv" else ",")
        elif kind == "text":
            yield from read_text(path, report, text_mode)
        else:
            for sentence in read_conll(path, report):
                yield Document(" ".join(sentence.words), sentence.source, sentence.line)
