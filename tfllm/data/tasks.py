"""Labelled task data for fine-tuning: text (and pair) with a label, from any file.

Formats: CSV/TSV (columns by name or index, header detected), JSONL (fields), and for
token classification CoNLL. The label set comes from the training file; an eval label
never seen in training is an error naming the file and line. Without an eval file a
stratified split with a fixed seed is taken from the training data.

Example:

>>> import pathlib, tempfile
>>> from tfllm.data.tasks import read_examples
>>> p = pathlib.Path(tempfile.mkdtemp()) / "t.tsv"
>>> _ = p.write_text("sentence\\tlabel\\ngood film\\t1\\nbad film\\t0\\n")
>>> [(e.text, e.label) for e in read_examples(p, label_column="label")]
[('good film', '1'), ('bad film', '0')]
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tfllm.data.readers import (
    ReadReport,
    TaggedSentence,
    check_readable,
    detect_format,
    json_lines,
    read_conll,
    read_delimited_rows,
    resolve_column,
)
from tfllm.errors import InputError


@dataclass
class Example:
    """One classification example (label as the string found in the file)."""

    text: str
    label: str
    text_pair: str | None = None
    source: str = ""
    line: int = 0


def expand_path(path: str) -> str:
    """`${TFLLM_DATA}` in config paths means the shared datasets folder."""
    if "${TFLLM_DATA}" in path or "$TFLLM_DATA" in path:
        from tfllm.data.locations import data_root

        root = str(data_root())
        path = path.replace("${TFLLM_DATA}", root).replace("$TFLLM_DATA", root)
    return os.path.expanduser(path)


def _jsonl_examples(path: Path, report: ReadReport, text: str, pair: str | None, label: str):
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                report.bad(path, number, f"not valid JSON ({err})")
                continue
            missing = [k for k in (text, pair, label) if k and k not in obj]
            if missing:
                report.bad(path, number, f"no field {missing[0]!r}")
                continue
            report.records += 1
            yield Example(str(obj[text]), str(obj[label]), str(obj[pair]) if pair else None,
                          str(path), number)


def read_examples(
    path: str | Path,
    text_column: str | int | None = None,
    label_column: str | int | None = "label",
    text_pair_column: str | int | None = None,
    fmt: str | None = None,
    report: ReadReport | None = None,
) -> list[Example]:
    """Classification examples from CSV/TSV/JSONL; bad rows are counted and skipped."""
    path = check_readable(expand_path(str(path)))
    report = report if report is not None else ReadReport()
    kind = fmt or detect_format(path)
    if kind == "jsonl":
        examples = list(_jsonl_examples(path, report, str(text_column or "text"),
                                        str(text_pair_column) if text_pair_column else None,
                                        str(label_column or "label")))
    elif kind in ("csv", "tsv"):
        names, rows = read_delimited_rows(path, report, "\t" if kind == "tsv" else ",")
        text_index = resolve_column(text_column, names, path)
        label_index = resolve_column(label_column, names, path)
        pair_index = (resolve_column(text_pair_column, names, path)
                      if text_pair_column is not None else None)
        if names is None and text_index == label_index:
            raise InputError(f"{path}: no header; give --text-column and --label-column indices")
        examples = []
        for number, row in rows:
            report.records += 1
            examples.append(Example(row[text_index], row[label_index].strip(),
                                    row[pair_index] if pair_index is not None else None,
                                    str(path), number))
    else:
        raise InputError(f"{path}: classification data must be csv, tsv or jsonl, not {kind}")
    if not examples:
        raise InputError(f"{path}: no examples")
    return examples


def read_texts(path: str | Path, text_column: str | int | None = None,
               fmt: str | None = None) -> list[str]:
    """One text per row of a CSV/TSV/JSONL file (or per line of a text file), in file order,
    read strictly: a bad row or an empty text is an error naming the file and line, since
    the output rows must line up with the input rows."""
    return [values[0] for _, values in read_columns(path, [text_column], fmt)]


def read_columns(path: str | Path, columns: list[str | int | None], fmt: str | None = None,
                 defaults: tuple[str, ...] = ("text",),
                 report: ReadReport | None = None) -> list[tuple[int, list[str]]]:
    """(line, [value per column]) for every row of a CSV/TSV/JSONL file (or per line of a text
    file, one column), strictly: invalid UTF-8, a bad row, a missing column or an empty value
    is an InputError naming the file and line (with a non-strict `report`, the row goes to
    `report.bad` instead). A column None is the JSONL field in `defaults` at its position
    (CSV/TSV: a text-like column)."""
    path = check_readable(expand_path(str(path)))
    kind = fmt or detect_format(path)
    report = report or ReadReport(strict=True)
    if kind == "jsonl":
        fields = [str(c if c is not None else defaults[i]) for i, c in enumerate(columns)]
        rows = list(_jsonl_rows(path, report, fields))
    elif kind in ("csv", "tsv"):
        names, found = read_delimited_rows(path, report, "\t" if kind == "tsv" else ",")
        indices = [resolve_column(c, names, path) for c in columns]
        rows = []
        for number, row in found:
            if max(indices) >= len(row):
                report.bad(path, number, f"no column {max(indices)} (the row has {len(row)})")
                continue
            rows.append((number, [row[i] for i in indices]))
    elif kind == "text" and len(columns) == 1:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: not UTF-8 ({err})") from None
        rows = [(number, [line]) for number, line in enumerate(lines, start=1)]
    else:
        raise InputError(f"{path}: expected csv, tsv, jsonl{' or text' * (len(columns) == 1)}, "
                         f"not {kind}")
    kept = []
    for number, values in rows:
        if any(not value.strip() for value in values):
            report.bad(path, number, "empty text")
            continue
        kept.append((number, values))
    if not kept and report.strict:
        raise InputError(f"{path}: no texts")
    return kept


def _jsonl_rows(path: Path, report: ReadReport, fields: list[str]):
    for number, obj in json_lines(path, report):
        missing = [f for f in fields if not isinstance(obj, dict) or f not in obj]
        if missing:
            report.bad(path, number, f"no field '{missing[0]}'")
            continue
        wrong = [f for f in fields if isinstance(obj[f], bool)
                 or not isinstance(obj[f], str | int)]  # integer ids are common in JSONL
        if wrong:
            report.bad(path, number, f"field '{wrong[0]}' is not a string")
            continue
        yield number, [str(obj[f]) for f in fields]


def read_tagged(path: str | Path, report: ReadReport | None = None,
                tag_column: int = -1) -> list[TaggedSentence]:
    """CoNLL sentences for token classification (error if none)."""
    path = check_readable(expand_path(str(path)))
    sentences = list(read_conll(path, report if report is not None else ReadReport(),
                                tag_column))
    if not sentences:
        raise InputError(f"{path}: no sentences")
    return sentences


def label_set(labels: list[str]) -> list[str]:
    """Sorted label names (numeric labels in numeric order)."""
    unique = set(labels)
    if all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def check_known_labels(examples: list, names: list[str], role: str) -> None:
    known = set(names)
    for example in examples:
        tagged = isinstance(example, TaggedSentence)
        labels = example.tags if tagged else [example.label]
        for offset, label in enumerate(labels):
            if label not in known:
                line = example.lines[offset] if tagged else example.line
                raise InputError(f"{example.source}:{line}: {role} label {label!r} "
                                 f"never seen in training (known: {', '.join(names[:20])})")


def stratified_split(examples: list[Example], fraction: float, seed: int):
    """(train, held-out) with each label's share kept; deterministic for a seed."""
    if not 0 < fraction < 1:
        raise InputError(f"eval split fraction must be in (0, 1), got {fraction}")
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    rng = random.Random(seed)
    train, held = [], []
    for label in sorted(by_label):
        group = by_label[label][:]
        rng.shuffle(group)
        cut = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        held.extend(group[:cut])
        train.extend(group[cut:])
    rng.shuffle(train)
    return train, held
