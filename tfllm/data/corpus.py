"""The corpus pipeline: read -> normalize -> filter -> exact dedup -> near dedup.

Each step is a function of its own module; this one runs them in order over a stream
of documents and counts what each step removed.

Example:

>>> from tfllm.data.corpus import CorpusStats, clean_documents
>>> from tfllm.data.readers import Document
>>> docs = [Document(t, "mem", i) for i, t in enumerate(
...     ["A first document here.", "a first   document here.", "<p>x</p>", "Another one, longer."])]
>>> stats = CorpusStats()
>>> [d.text for d in clean_documents(docs, stats)]
['A first document here.', 'Another one, longer.']
>>> stats.exact_duplicates, stats.filtered
(1, {'too_short': 1})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tfllm.data.dedup import DedupOptions, ExactDeduplicator, NearDeduplicator
from tfllm.data.filters import FilterOptions, rejection_reason
from tfllm.data.normalize import NormalizeOptions, normalize
from tfllm.data.readers import Document


@dataclass
class CleanOptions:
    """How documents are read from the corpus files."""

    format: str | None = None  # text, jsonl, csv, tsv, conll; None = from the extension
    text_mode: str = "blocks"  # plain text: `blocks` (blank-line separated) or `lines`
    field: str = "text"  # JSONL field
    column: str | None = None  # CSV/TSV column name or index; None = a text-like column


@dataclass
class CorpusStats:
    """What the pipeline saw and removed; written into stats.json."""

    documents_in: int = 0
    bad_records: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    exact_duplicates: int = 0
    near_duplicates: int = 0
    documents_out: int = 0
    characters_out: int = 0

    def as_dict(self) -> dict:
        return {
            "documents_in": self.documents_in,
            "bad_records": self.bad_records,
            "filtered": dict(self.filtered),
            "filtered_total": sum(self.filtered.values()),
            "exact_duplicates": self.exact_duplicates,
            "near_duplicates": self.near_duplicates,
            "documents_out": self.documents_out,
            "characters_out": self.characters_out,
        }


def clean_documents(
    documents: Iterable[Document],
    stats: CorpusStats,
    normalize_options: NormalizeOptions | None = None,
    filter_options: FilterOptions | None = None,
    dedup_options: DedupOptions | None = None,
) -> Iterator[Document]:
    """Yield the documents that survive every enabled step, counting the others."""
    normalize_options = normalize_options or NormalizeOptions()
    filter_options = filter_options or FilterOptions()
    dedup_options = dedup_options or DedupOptions()
    exact = ExactDeduplicator() if dedup_options.exact else None
    near = NearDeduplicator(dedup_options) if dedup_options.near else None
    filtered: Counter[str] = Counter(stats.filtered)
    for doc in documents:
        stats.documents_in += 1
        text = normalize(doc.text, normalize_options)
        reason = rejection_reason(text, filter_options)
        if reason is not None:
            filtered[reason] += 1
            stats.filtered = dict(filtered)
            continue
        if exact is not None and exact.is_duplicate(text):
            stats.exact_duplicates += 1
            continue
        if near is not None and near.is_duplicate(text):
            stats.near_duplicates += 1
            continue
        stats.documents_out += 1
        stats.characters_out += len(text)
        yield Document(text, doc.source, doc.line)
