"""One encoder: what training feeds the model, what the server feeds the exported model and
what the SavedModel's in-graph tokenizer computes are the same ids, on the first 500 rows of
every shared data set (single texts, pairs, head+tail truncation, pre-split NER words)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tfllm_serving.runtime import ModelRuntime
from tfllm_serving.wordpiece import load_tokenizer, read_vocab

from tests.serving.conftest import build_onnx_model
from tfllm.data.readers import ReadReport, read_conll
from tfllm.data.tasks import Example
from tfllm.finetune.features import classification_features
from tfllm.finetune.tagging import encode_tagged
from tfllm.tokenization.tf_tokenizer import InGraphTokenizer

ROWS = 500


def _table(path: Path, columns: list[str], delimiter: str) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter,
                                quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        return [[row[c] for c in columns] for _, row in zip(range(ROWS), reader, strict=False)]


def _stsb(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8") as f:  # no header; quoting off (see its README)
        return [line.rstrip("\n").split("\t")[5:7] for _, line in zip(range(ROWS), f,
                                                                      strict=False)]


def _wikitext(path: Path) -> list[list[str]]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [[line] for line in lines if line and not line.startswith("=")][:ROWS]


def _movies(path: Path) -> list[list[str]]:
    return [[f"{title} | {genres.replace('|', ', ')}"]
            for title, genres in _table(path, ["title", "genres"], ",")]


# data set -> (rows of [text] or [text, pair], max_len, truncation)
TEXTS = {
    "sst2": (lambda d: _table(d / "sst2" / "train.tsv", ["sentence"], "\t"), 64, "head"),
    "imdb": (lambda d: _table(d / "imdb" / "train.tsv", ["text"], "\t"), 256, "head_tail"),
    "banking77": (lambda d: _table(d / "banking77" / "train.csv", ["text"], ","), 64, "head"),
    "financial_phrasebank": (lambda d: _table(
        d / "financial_phrasebank" / "sentences_allagree.tsv", ["sentence"], "\t"), 96, "head"),
    "stsb_pairs": (lambda d: _stsb(d / "stsb" / "sts-train.csv"), 24, "head"),
    "wikitext2": (lambda d: _wikitext(d / "wikitext2" / "wiki.valid.tokens"), 128, "head"),
    "movielens": (lambda d: _movies(d / "movielens_small" / "movies.csv"), 32, "head"),
}
TAGGED = {"conll2003": 64, "ncbi_disease": 64}


def _runtime(root: Path, minilm_dir: Path, task: str, max_len: int, truncation: str,
             pairs: bool) -> ModelRuntime:
    """A served version exactly as export writes it, with the checkpoint's tokenizer.json
    and a stand-in ONNX graph (the ids are what is compared here, not the model)."""
    vdir = root / task / "1"
    vdir.mkdir(parents=True)
    shutil.copy(minilm_dir / "tokenizer.json", vdir / "tokenizer.json")
    labels = ["negative", "positive"] if task == "classification" else ["B-X", "I-X", "O"]
    vocab = read_vocab(minilm_dir / "vocab.txt")
    build_onnx_model(vdir / "model.onnx", len(vocab), len(labels), task, hidden=4)
    (vdir / "labels.json").write_text(json.dumps(labels))
    (vdir / "model_config.json").write_text(json.dumps({
        "task": task, "max_len": max_len, "text_pair": pairs, "truncation": truncation,
        "decoding": "bio", "artifacts": {"onnx": "model.onnx"}}))
    return ModelRuntime.load(vdir)


def _served_ids(training: np.ndarray, served: np.ndarray) -> np.ndarray:
    """Training pads to max_len, the server to the request's longest row: compare the
    served width and check that training has only padding beyond it."""
    assert not training[:, served.shape[1]:].any()
    return training[:, : served.shape[1]]


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_training_serving_and_savedmodel_encode_the_same_ids(name, data_dir, minilm_dir,
                                                             tmp_path):
    load, max_len, truncation = TEXTS[name]
    rows = load(data_dir)
    assert len(rows) == ROWS
    pairs = len(rows[0]) == 2
    examples = [Example(r[0], "positive", r[1] if pairs else None) for r in rows]
    training = classification_features(load_tokenizer(minilm_dir), examples, max_len, truncation)
    runtime = _runtime(tmp_path, minilm_dir, "classification", max_len, truncation, pairs)
    served = runtime.encode_texts([r[0] for r in rows], [r[1] for r in rows] if pairs else None)
    for train_key, serve_key in (("token_ids", "input_ids"), ("padding_mask", "attention_mask"),
                                 ("segment_ids", "token_type_ids")):
        np.testing.assert_array_equal(_served_ids(training[train_key], getattr(served, serve_key)),
                                      getattr(served, serve_key), err_msg=f"{name} {serve_key}")
    truncated = int((training["padding_mask"].sum(1) == max_len).sum())
    in_graph = InGraphTokenizer(read_vocab(minilm_dir / "vocab.txt"), max_len=max_len,
                                truncation=truncation)
    graph = in_graph(tf.constant([r[0] for r in rows]),
                     tf.constant([r[1] for r in rows]) if pairs else None)
    np.testing.assert_array_equal(graph["input_ids"].numpy(), served.input_ids,
                                  err_msg=f"{name}: SavedModel tokenizer")
    np.testing.assert_array_equal(graph["token_type_ids"].numpy(), served.token_type_ids)
    if name in ("imdb", "wikitext2", "stsb_pairs"):
        assert truncated > 10, f"{name}: the slice should exercise truncation"


@pytest.mark.parametrize("name", sorted(TAGGED))
def test_ner_words_encode_alike_for_training_and_the_server(name, data_dir, minilm_dir,
                                                            tmp_path):
    max_len = TAGGED[name]
    sentences = list(read_conll(data_dir / name / "train.txt", ReadReport()))[:ROWS]
    words = [s.words for s in sentences]
    training = encode_tagged(load_tokenizer(minilm_dir), words, None, None, max_len)
    runtime = _runtime(tmp_path, minilm_dir, "token_classification", max_len, "head", False)
    served = runtime.encode_texts([" ".join(w) for w in words])
    assert served.words == words
    np.testing.assert_array_equal(served.first_token, training["first_token"])
    np.testing.assert_array_equal(served.input_ids, training["input_ids"])
    assert (training["first_token"] == -1).any(), "the slice should cut some words off"
    in_graph = InGraphTokenizer(read_vocab(minilm_dir / "vocab.txt"), max_len=max_len)
    graph = in_graph(tf.constant([" ".join(w) for w in words]))["input_ids"].numpy()
    np.testing.assert_array_equal(graph, served.input_ids, err_msg=f"{name}: SavedModel tokenizer")
