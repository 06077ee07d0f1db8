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


def correlations(first: np.ndarray, second: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson x 100 of the rows' cosine similarities against `gold`."""
    from scipy.stats import pearsonr, spearmanr

    cosine = (first * second).sum(1) / (np.linalg.norm(first, axis=1)
                                         * np.linalg.norm(second, axis=1))
    return {"spearman": round(100 * float(spearmanr(cosine, gold).statistic), 4),
            "pearson": round(100 * float(pearsonr(cosine, gold).statistic), 4)}
