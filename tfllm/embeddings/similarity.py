"""Scored sentence pairs (STS Benchmark and the like) and how well embeddings rank them:
Spearman (and Pearson) correlation x 100 between the pairs' cosine similarities and the gold
scores, the SBERT / MTEB convention.

STS-B's files have no header and no quoting (a quote is text): `genre, file, year, id, score,
sentence1, sentence2`, and some lines carry two more attribution fields, which are ignored.

Example:

>>> import numpy as np
>>> from tfllm.embeddings.similarity import correlations
>>> a = np.eye(3, dtype="float32")
>>> b = np.array([[1, 0, 0], [.6, .8, 0], [0, .8, .6]], dtype="float32")  # cosines 1, .8, .6
>>> correlations(a, b, np.array([5.0, 4.0, 1.0]))["spearman"]
100.0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfllm.errors import InputError


@dataclass
class ScoredPairs:
    first: list[str]
    second: list[str]
    scores: np.ndarray  # float, the gold similarity


def read_stsb(path: str | Path) -> ScoredPairs:
    """An STS Benchmark file (`sts-train.csv`, `sts-dev.csv`, `sts-test.csv`)."""
    from tfllm.data.readers import check_readable

    path = check_readable(path)
    first, second, scores = [], [], []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 7:
                raise InputError(f"{path}:{number}: expected 7 tab-separated fields, found "
                                 f"{len(fields)}")
            try:
                scores.append(float(fields[4]))
            except ValueError:
                raise InputError(f"{path}:{number}: score {fields[4]!r} is not a number") from None
            first.append(fields[5])
            second.append(fields[6])
    if not scores:
        raise InputError(f"{path}: no pairs")
    return ScoredPairs(first, second, np.array(scores))


def read_pairs(path: str | Path, fmt: str | None = None, first_column: str | None = None,
               second_column: str | None = None, score_column: str | None = None
               ) -> ScoredPairs:
    """Sentence pairs from an STS Benchmark file (`fmt="stsb"`, or recognised by its layout
    whatever `fmt` says: headerless, tab-separated, a score in the fifth field) or a
    CSV/TSV/JSONL file with two text columns and, optionally, a score column (without one
    every score is 0: pairs for the in-batch-negatives loss). A bad row or an empty text
    names its file and line."""
    import json

    from tfllm.data.readers import ReadReport, detect_format, read_delimited_rows, resolve_column
    from tfllm.data.tasks import expand_path

    path = Path(expand_path(str(path)))
    if fmt == "stsb" or _looks_like_stsb(path):
        return read_stsb(path)
    kind = fmt or detect_format(path)
    columns = (first_column or "text", second_column or "text_pair", score_column)
    rows: list[tuple[int, list]] = []
    if kind == "jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                obj = json.loads(line)
                rows.append((number, [obj[c] if c else 0 for c in columns]))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise InputError(f"{path}:{number}: not a JSON object with {columns} "
                                 f"({err})") from None
    elif kind in ("csv", "tsv"):
        names, found = read_delimited_rows(path, ReadReport(strict=True),
                                           "\t" if kind == "tsv" else ",")
        index = [resolve_column(c, names, path) if c else None for c in columns]
        rows = [(n, [row[i] if i is not None else 0 for i in index]) for n, row in found]
    else:
        raise InputError(f"{path}: pairs must come from stsb, csv, tsv or jsonl, not {kind}")
    first, second, scores = [], [], []
    for number, (a, b, score) in rows:
        if not str(a).strip() or not str(b).strip():
            raise InputError(f"{path}:{number}: empty text")
        try:
            scores.append(float(score))
        except ValueError:
            raise InputError(f"{path}:{number}: score {score!r} is not a number") from None
        first.append(str(a))
        second.append(str(b))
    if not first:
        raise InputError(f"{path}: no pairs")
    return ScoredPairs(first, second, np.array(scores))


def _looks_like_stsb(path: Path) -> bool:
    from tfllm.data.readers import check_readable

    with check_readable(path).open(encoding="utf-8", errors="replace") as f:
        fields = f.readline().rstrip("\n").split("\t")
    try:
        return len(fields) >= 7 and 0.0 <= float(fields[4]) <= 5.0
    except ValueError:
        return False


def correlations(first: np.ndarray, second: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson x 100 of the rows' cosine similarities against `gold`."""
    from scipy.stats import pearsonr, spearmanr

    cosine = (first * second).sum(1) / (np.linalg.norm(first, axis=1)
                                         * np.linalg.norm(second, axis=1))
    return {"spearman": round(100 * float(spearmanr(cosine, gold).statistic), 4),
            "pearson": round(100 * float(pearsonr(cosine, gold).statistic), 4)}


def retrieval_scores(pairs: ScoredPairs, first: np.ndarray, second: np.ndarray,
                     min_score: float = 4.0, k: int = 10) -> dict[str, float]:
    """Scored pairs as a search task: each first sentence of a pair scored >= `min_score` is
    a query, every distinct sentence of the pairs is the corpus (the query's own sentence
    excluded), the pair's second sentence the one relevant document. MRR@k and recall@k
    x 100, from the pairs' unit rows `first` and `second`.

    >>> pairs = ScoredPairs(["a cat", "a dog"], ["a kitten", "a puppy"], np.array([5.0, 4.5]))
    >>> rows = np.array([[1, 0], [0, 1], [.9, .1], [.1, .9]], dtype="float32")
    >>> rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    >>> retrieval_scores(pairs, rows[:2], rows[2:])
    {'mrr@10': 100.0, 'recall@10': 100.0, 'queries': 2, 'corpus': 4}
    """
    row_of: dict[str, np.ndarray] = {}
    for texts, rows in ((pairs.first, first), (pairs.second, second)):
        for text, row in zip(texts, rows, strict=True):
            row_of.setdefault(text, row)
    corpus = list(row_of)
    position = {text: i for i, text in enumerate(corpus)}
    matrix = np.stack([row_of[t] for t in corpus])
    queries = [(q, d) for q, d, s in zip(pairs.first, pairs.second, pairs.scores, strict=True)
               if s >= min_score and q != d]
    reciprocal, found = [], []
    for query, relevant in queries:
        scores = matrix @ row_of[query]
        scores[position[query]] = -np.inf
        rank = 1 + int((scores > scores[position[relevant]]).sum())
        reciprocal.append(1.0 / rank if rank <= k else 0.0)
        found.append(rank <= k)
    return {f"mrr@{k}": round(100 * float(np.mean(reciprocal)), 4),
            f"recall@{k}": round(100 * float(np.mean(found)), 4), "queries": len(queries),
            "corpus": len(corpus)}
