"""Exact and near-duplicate removal on real SST-2 sentences injected into a real corpus."""

from __future__ import annotations

import random

from tfllm.data.corpus import CorpusStats, clean_documents
from tfllm.data.dedup import DedupOptions, ExactDeduplicator, NearDeduplicator, exact_key
from tfllm.data.filters import FilterOptions, rejection_reason
from tfllm.data.normalize import NormalizeOptions, normalize
from tfllm.data.readers import Document, ReadReport, read_corpus


def change_a_few_words(sentence: str, rng: random.Random, replacements: list[str]) -> str:
    """Replace about one word in ten (at least one, at most three) with another real word."""
    words = sentence.split()
    count = min(3, max(1, len(words) // 10))
    for index in rng.sample(range(len(words)), count):
        words[index] = rng.choice([w for w in replacements if w != words[index]])
    return " ".join(words)


def test_injected_exact_and_near_duplicates_are_removed_and_originals_kept(data_dir,
                                                                           sst2_dev_sentences):
    rng = random.Random(7)
    wiki = [d.text for d in read_corpus([data_dir / "wikitext2" / "wiki.valid.tokens"],
                                        ReadReport())]
    # The distinct originals: every real document that the default filters keep, once.
    base, seen = [], set()
    for text in sst2_dev_sentences + wiki:
        text = normalize(text, NormalizeOptions())
        if rejection_reason(text, FilterOptions()) is None and exact_key(text) not in seen:
            seen.add(exact_key(text))
            base.append(text)
    originals = rng.sample([s for s in sst2_dev_sentences if len(s.split()) >= 10], 400)
    vocabulary = sorted({w for s in sst2_dev_sentences for w in s.split() if w.isalpha()})
    exact_copies = originals[:200]
    near_copies = [change_a_few_words(s, rng, vocabulary) for s in originals[200:]]
    assert all(exact_key(n) not in seen for n in near_copies)
    injected = [(t, "exact") for t in exact_copies] + [(t, "near") for t in near_copies]
    rng.shuffle(injected)
    stream = [Document(t, "base", i) for i, t in enumerate(base)]
    stream += [Document(t, kind, i) for i, (t, kind) in enumerate(injected)]

    stats = CorpusStats()
    kept = list(clean_documents(stream, stats))  # the default options of the pipeline
    kept_by_source: dict[str, int] = {}
    for doc in kept:
        kept_by_source[doc.source] = kept_by_source.get(doc.source, 0) + 1

    exact_removed = 1 - kept_by_source.get("exact", 0) / 200
    near_removed = 1 - kept_by_source.get("near", 0) / 200
    originals_removed = 1 - kept_by_source["base"] / len(base)
    print(f"exact removed {exact_removed:.1%}, near removed {near_removed:.1%}, "
          f"distinct originals removed {originals_removed:.2%} of {len(base)}")
    assert exact_removed >= 0.95
    assert near_removed >= 0.95
    assert originals_removed < 0.01
    assert stats.exact_duplicates + stats.near_duplicates == stats.documents_in - len(kept)


def test_exact_dedup_ignores_case_and_spacing_only():
    dedup = ExactDeduplicator()
    assert not dedup.is_duplicate("A film.")
    assert dedup.is_duplicate("a   FILM.")
    assert not dedup.is_duplicate("a film!")


def test_near_dedup_threshold_is_configurable():
    a = "the acting is superb and the story moves at a steady confident pace throughout"
    b = "the acting is superb and the plot moves at a steady confident pace throughout"
    strict = NearDeduplicator(DedupOptions(near_threshold=0.95))
    loose = NearDeduplicator(DedupOptions(near_threshold=0.6))
    assert [strict.is_duplicate(a), strict.is_duplicate(b)] == [False, False]
    assert [loose.is_duplicate(a), loose.is_duplicate(b)] == [False, True]
