"""The data stages behind `tfllm vocab`, `tfllm data clean` and `tfllm data pretrain`.

Each reads corpus files, runs the corpus pipeline, writes its outputs under a
temporary name (renamed when complete) with a `stats.json`, and prints a short report.

Example:

>>> import pathlib, tempfile
>>> from tfllm.data.stages import CleanCorpusConfig, clean_corpus
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = (tmp / "c.txt").write_text("First document, long enough.\\n\\nFirst document, long enough.\\n")
>>> stats = clean_corpus([tmp / "c.txt"], tmp / "clean", CleanCorpusConfig(), quiet=True)
>>> stats["documents_out"], stats["exact_duplicates"]
(1, 1)
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tfllm_serving.wordpiece import load_tokenizer, read_vocab
from tqdm import tqdm

from tfllm.atomic import atomic_dir
from tfllm.config import save_config
from tfllm.data.corpus import CleanOptions, CorpusStats, clean_documents
from tfllm.data.dedup import DedupOptions
from tfllm.data.filters import FilterOptions
from tfllm.data.normalize import NormalizeOptions, normalize
from tfllm.data.pretraining import ExampleOptions, MaskingCounts, MaskingVocab, create_instances
from tfllm.data.readers import Document, ReadReport, read_corpus
from tfllm.data.sentences import split_sentences
from tfllm.errors import InputError
from tfllm.tokenization.vocab import train_wordpiece, write_tokenizer_files

PathLike = str | Path


@dataclass
class CleanCorpusConfig:
    """`tfllm vocab` and `tfllm data clean`: the corpus pipeline alone."""

    normalize: NormalizeOptions = field(default_factory=NormalizeOptions)
    filter: FilterOptions = field(default_factory=FilterOptions)
    dedup: DedupOptions = field(default_factory=DedupOptions)
    corpus: CleanOptions = field(default_factory=CleanOptions)


@dataclass
class PretrainDataConfig(CleanCorpusConfig):
    """`tfllm data pretrain`: corpus pipeline, then MLM + NSP examples."""

    examples: ExampleOptions = field(default_factory=ExampleOptions)


def _read(paths: Sequence[PathLike], cfg: CleanCorpusConfig, report: ReadReport) -> Iterator[Document]:
    return read_corpus(
        paths, report, fmt=cfg.corpus.format, field_name=cfg.corpus.field,
        column=cfg.corpus.column, text_mode=cfg.corpus.text_mode,
    )


def _cleaned(paths: Sequence[PathLike], cfg: CleanCorpusConfig, quiet: bool):
    """Run the corpus pipeline to a list; return it with the read report and stats."""
    report, stats = ReadReport(), CorpusStats()
    docs = clean_documents(
        tqdm(_read(paths, cfg, report), desc="clean", unit="doc", disable=quiet),
        stats, cfg.normalize, cfg.filter, cfg.dedup,
    )
    kept = list(docs)
    stats.bad_records = report.bad_records
    if not kept:
        raise InputError(
            f"no documents left in {', '.join(map(str, paths))} "
            f"(read {report.records}, bad {report.bad_records}, filtered {sum(stats.filtered.values())})"
        )
    return kept, report, stats


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _print_stats(title: str, stats: dict, quiet: bool) -> None:
    if quiet:
        return
    print(f"{title}:")
    for key, value in stats.items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        print(f"  {key:24s} {value}")


def build_vocab(
    paths: Sequence[PathLike],
    out: PathLike,
    vocab_size: int,
    lowercase: bool = True,
    cfg: CleanCorpusConfig | None = None,
    quiet: bool = False,
) -> dict:
    """Train WordPiece on the normalized corpus; write vocab.txt, tokenizer.json, stats.json."""
    if vocab_size < 10:
        raise InputError(f"--vocab-size must be at least 10, got {vocab_size}")
    cfg = cfg or CleanCorpusConfig()
    report = ReadReport()
    started = time.perf_counter()
    texts = (
        normalize(doc.text, cfg.normalize)
        for doc in tqdm(_read(paths, cfg, report), desc="vocab", unit="doc", disable=quiet)
    )
    tokenizer = train_wordpiece(texts, vocab_size=vocab_size, lowercase=lowercase)
    if report.records == 0:
        raise InputError(f"no text in {', '.join(map(str, paths))}")
    stats = {
        "documents": report.records,
        "bad_records": report.bad_records,
        "vocab_size": tokenizer.get_vocab_size(),
        "lowercase": lowercase,
        "seconds": round(time.perf_counter() - started, 3),
    }
    with atomic_dir(out) as tmp:
        write_tokenizer_files(tokenizer, tmp)
        _write_json(tmp / "stats.json", stats)
    _print_stats(f"vocab -> {out}", stats, quiet)
    return stats


def clean_corpus(
    paths: Sequence[PathLike], out: PathLike, cfg: CleanCorpusConfig, quiet: bool = False
) -> dict:
    """Write the surviving documents as `documents.jsonl` with stats.json and config.yaml."""
    kept, _, stats = _cleaned(paths, cfg, quiet)
    summary = stats.as_dict()
    with atomic_dir(out) as tmp:
        with (tmp / "documents.jsonl").open("w", encoding="utf-8") as f:
            for doc in kept:
                f.write(json.dumps({"text": doc.text, "source": doc.source, "line": doc.line},
                                   ensure_ascii=False) + "\n")
        _write_json(tmp / "stats.json", summary)
        save_config(cfg, tmp / "config.yaml")
    _print_stats(f"clean -> {out}", summary, quiet)
    return summary


def _tokenize_documents(docs: list[Document], tokenizer, quiet: bool):
    """Documents -> lists of sentence token ids (empty sentences and documents dropped)."""
    tokenizer.no_truncation()
    tokenizer.no_padding()
    sentences_per_doc = [split_sentences(doc.text) for doc in docs]
    flat = [s for sentences in sentences_per_doc for s in sentences]
    ids: list[list[int]] = []
    batch = 2048
    for start in tqdm(range(0, len(flat), batch), desc="tokenize", unit="batch", disable=quiet):
        encodings = tokenizer.encode_batch(flat[start : start + batch], add_special_tokens=False)
        ids.extend(e.ids for e in encodings)
    documents, cursor = [], 0
    for sentences in sentences_per_doc:
        doc = [s for s in ids[cursor : cursor + len(sentences)] if s]
        cursor += len(sentences)
        if doc:
            documents.append(doc)
    return documents, len(flat)


def build_pretraining_data(
    paths: Sequence[PathLike],
    tokenizer_dir: PathLike,
    out: PathLike,
    cfg: PretrainDataConfig,
    quiet: bool = False,
) -> dict:
    """Corpus pipeline -> sentences -> WordPiece ids -> MLM/NSP instances -> TFRecord shards."""
    from tfllm.data.tfrecords import write_shards  # imports tensorflow

    ex = cfg.examples
    if ex.masking not in ("static", "dynamic"):
        raise InputError(f"examples.masking must be 'static' or 'dynamic', got {ex.masking!r}")
    if ex.dupe_factor < 1:
        raise InputError(f"dupe_factor must be at least 1, got {ex.dupe_factor}")
    tokenizer_dir = Path(tokenizer_dir)
    if (tokenizer_dir / "backbone").is_dir() and (tokenizer_dir / "tokenizer").is_dir():
        tokenizer_dir = tokenizer_dir / "tokenizer"  # a RUN_DIR (`--init` of a later stage)
    tokenizer = load_tokenizer(tokenizer_dir)
    vocab_tokens = (
        read_vocab(tokenizer_dir / "vocab.txt")
        if (tokenizer_dir / "vocab.txt").is_file()
        else [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]
    )
    vocab = MaskingVocab(vocab_tokens)
    started = time.perf_counter()

    kept, _, corpus_stats = _cleaned(paths, cfg, quiet)
    documents, sentences = _tokenize_documents(kept, tokenizer, quiet)
    tokens = sum(len(s) for doc in documents for s in doc)
    unknown = sum(s.count(vocab.unk_id) for doc in documents for s in doc)

    rng = random.Random(ex.seed)
    counts = MaskingCounts()
    instances = []
    for _ in tqdm(range(ex.dupe_factor), desc="examples", unit="pass", disable=quiet):
        instances.extend(create_instances(documents, vocab, ex, rng, counts))
    if not instances:
        raise InputError("the corpus produced no examples (documents too short?)")
    rng.shuffle(instances)
    num_shards = max(1, math.ceil(len(instances) / ex.examples_per_shard))
    example_tokens = sum(len(i.tokens) for i in instances)
    random_next = sum(i.is_random_next for i in instances)

    with atomic_dir(out) as tmp:
        shards = write_shards(instances, tmp, ex.seq_len, ex.max_predictions_per_seq,
                              num_shards, masked=ex.masking == "static")
        seconds = time.perf_counter() - started
        masked = max(counts.masked, 1)
        stats = {
            **corpus_stats.as_dict(),
            "sentences": sentences,
            "tokens": tokens,
            "unk_rate": unknown / max(tokens, 1),
            "examples": len(instances),
            "example_tokens": example_tokens,
            "shards": shards,
            "seq_len": ex.seq_len,
            "max_predictions_per_seq": ex.max_predictions_per_seq,
            "vocab_size": len(vocab),
            "masking": ex.masking,
            "nsp": ex.nsp,
            "nsp_random_fraction": random_next / len(instances) if ex.nsp else 0.0,
            "masked_fraction": counts.masked / max(counts.candidates, 1),
            "mask_token_fraction": counts.mask_token / masked,
            "random_token_fraction": counts.random_token / masked,
            "keep_fraction": counts.kept / masked,
            "seconds": round(seconds, 3),
            "tokens_per_second": round(example_tokens / seconds, 1),
        }
        if ex.masking == "dynamic":
            for key in ("masked_fraction", "mask_token_fraction", "random_token_fraction",
                        "keep_fraction"):
                stats[key] = None
        tokenizer_out = tmp / "tokenizer"
        tokenizer_out.mkdir()
        write_tokenizer_files(tokenizer, tokenizer_out)
        save_config(cfg, tmp / "config.yaml")
        _write_json(tmp / "stats.json", stats)
    _print_stats(f"data pretrain -> {out}", {k: v for k, v in stats.items() if k != "shards"},
                 quiet)
    return stats

