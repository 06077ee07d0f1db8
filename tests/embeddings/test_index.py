"""`tfllm index` / `tfllm search` on real STS-B sentences with all-MiniLM-L6-v2: a round trip
through the CLI, exact duplicates found first (exact and HNSW), other weights refused, bad
documents named by file and line, and `POST /search` refusing bad bodies with JSON 4xx."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tfllm.cli import main
from tfllm.embeddings.index import IndexConfig, SearchIndex, build_app, build_index
from tfllm.errors import InputError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, data_dir):
    from tfllm.embeddings.similarity import read_stsb

    pairs = read_stsb(data_dir / "stsb" / "sts-test.csv")
    # distinct after lowercasing (the model's tokenizer does), so each has one exact match
    sentences = list({" ".join(s.lower().split()): s
                      for s in pairs.first + pairs.second}.values())[:200]
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    path.write_text("".join(json.dumps({"doc": f"s{i}", "body": s}) + "\n"
                            for i, s in enumerate(sentences)), encoding="utf-8")
    return path, sentences


@pytest.fixture(scope="module")
def minilm_index(corpus, minilm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "stsb"
    assert main(["index", "--model", str(minilm_dir), "--input", str(corpus[0]),
                 "--id-column", "doc", "--text-column", "body", "--out", str(out)]) == 0
    return out


def test_search_finds_each_exact_duplicate_first(minilm_index, corpus, capsys):
    _, sentences = corpus
    queries = [sentences[7], sentences[150], sentences[199]]
    capsys.readouterr()
    assert main(["search", "--index", str(minilm_index), "--k", "3", *queries]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == queries
    for line, expected in zip(lines, ("s7", "s150", "s199"), strict=True):
        top = line["results"][0]
        assert top["id"] == expected and top["score"] > 0.9999, line
        assert len(line["results"]) == 3 and line["results"][1]["score"] < top["score"]
    meta = json.loads((minilm_index / "index.json").read_text())
    assert meta["documents"] == 200 and meta["dim"] == 384 and meta["config"]["kind"] == "exact"


def test_an_hnsw_index_agrees_on_the_nearest_document(corpus, minilm_dir, tmp_path):
    path, sentences = corpus
    build_index(path, tmp_path / "hnsw", IndexConfig(str(minilm_dir), kind="hnsw"), "doc", "body",
                quiet=True)
    index = SearchIndex(tmp_path / "hnsw")
    hits = index.search(sentences[:20], k=1)
    assert [h[0]["id"] for h in hits] == [f"s{i}" for i in range(20)]


def test_an_index_refuses_queries_embedded_by_other_weights(minilm_index, minilm_dir, tmp_path,
                                                            capsys):
    other = tmp_path / "other"
    other.mkdir()
    for item in minilm_dir.iterdir():
        if item.name != "vocab.txt":
            (other / item.name).symlink_to(item)
    vocab = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab[1000], vocab[1001] = vocab[1001], vocab[1000]  # same shapes, other meaning
    (other / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    assert main(["search", "--index", str(minilm_index), "--model", str(other), "a query"]) == 2
    assert "built with other weights" in capsys.readouterr().err


@pytest.mark.parametrize("case,content,message", [
    ("duplicate_id", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "b"}\n{"id": 1, "text": "c"}\n',
     "docs.jsonl:3: duplicate id '1' (first on line 1)"),
    ("empty_text", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "  "}\n', "docs.jsonl:2: empty text"),
    ("not_utf8", b'{"id": 1, "text": "a"}\n{"id": 2, "text": "caf\xe9"}\n',
     "docs.jsonl:2: invalid UTF-8"),
    ("missing_column", b'{"id": 1, "text": "a"}\n{"id": 2, "body": "b"}\n',
     "docs.jsonl:2: no field 'text'"),
])
def test_bad_documents_exit_2_naming_file_and_line_and_leave_no_index(
        tmp_path, minilm_dir, capsys, case, content, message):
    (tmp_path / "docs.jsonl").write_bytes(content)
    assert main(["index", "--model", str(minilm_dir), "--input", str(tmp_path / "docs.jsonl"),
                 "--out", str(tmp_path / "idx")]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]


def test_search_endpoint_answers_queries_and_refuses_bad_bodies_with_json(minilm_index, corpus):
    client = TestClient(build_app(SearchIndex(minilm_index), max_queries=4, max_k=5,
                                  max_body=4096))
    answer = client.post("/search", json={"query": corpus[1][42], "k": 2})
    assert answer.status_code == 200
    assert answer.json()["results"][0][0]["id"] == "s42"
    for body, status in [(b"{oops", 400), (b'["a list"]', 400), (b'{"queries": []}', 400),
                         (b'{"queries": ["a", 3]}', 400), (b'{"query": "a", "k": 0}', 400),
                         (b'{"query": "a", "k": "3"}', 400),
                         (json.dumps({"queries": ["a"] * 5}).encode(), 400),
                         (b'{"query": "' + b"x" * 5000 + b'"}', 413)]:
        reply = client.post("/search", content=body)
        assert reply.status_code == status, body[:40]
        assert "error" in reply.json()
    assert client.get("/search").status_code == 405


def test_an_index_takes_its_rows_from_batch_shards_of_the_same_model_only(
    tmp_path: Path, write_export, sst2_dev_sentences: list[str],
) -> None:
    from tfllm.batch.exported import ExportedModel
    from tfllm.batch.shards import manifest, shard_payload

    version = write_export(tmp_path / "repo", "emb", 1, task="embedding")
    texts = sst2_dev_sentences[:12]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                            for i, t in enumerate(texts)))
    # What `tfllm batch --task embed --output PREFIX` writes (tests/batch runs it on Beam),
    # split over two shards, the second written first.
    prefix = str(tmp_path / "out" / "emb")
    (tmp_path / "out").mkdir()
    rows = ExportedModel(version).embeddings(texts)
    keys = [(str(docs), i + 1) for i in range(len(texts))]
    for name, part in (("b", slice(6, None)), ("a", slice(0, 6))):
        npy, lines = shard_payload(keys[part], rows[part])
        Path(f"{prefix}-embeddings-{name}.npy").write_bytes(npy)
        Path(f"{prefix}-embeddings-{name}.jsonl").write_bytes(lines)
    Path(f"{prefix}-embeddings.json").write_text(json.dumps(manifest(version, "onnx",
                                                                     str(docs))))
    meta = build_index(docs, tmp_path / "idx", IndexConfig(str(version)), quiet=True,
                       embeddings=prefix)
    assert meta["documents"] == 12
    hits = SearchIndex(tmp_path / "idx").search(texts[:3], k=1)
    assert [h[0]["id"] for h in hits] == ["d0", "d1", "d2"]

    with docs.open("a") as f:  # a document the batch run never embedded
        f.write(json.dumps({"id": "new", "text": "a brand new document"}) + "\n")
    with pytest.raises(InputError, match=r"docs.jsonl:13: no row in --embeddings"):
        build_index(docs, tmp_path / "idx2", IndexConfig(str(version)), embeddings=prefix)
    other = write_export(tmp_path / "repo", "emb", 2, task="embedding", seed=9)
    with pytest.raises(InputError, match="weights differ"):
        build_index(docs, tmp_path / "idx3", IndexConfig(str(other)), embeddings=prefix)
