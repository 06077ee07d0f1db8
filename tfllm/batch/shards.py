"""Embedding shards: what `tfllm batch --task embed --output PREFIX` writes and `tfllm index
--embeddings PREFIX` reads, kept in one place so the two agree.

- `PREFIX-embeddings-<id>.npy`: float32 [rows, dim];
- `PREFIX-embeddings-<id>.jsonl`: `{"file": ..., "line": ...}` of each row, in order;
- `PREFIX-embeddings.json`: the manifest, written last (a finished run): the export and the
  fingerprint of its weights and tokenizer.

Example:

>>> import numpy as np
>>> npy, keys = shard_payload([("docs.jsonl", 1), ("docs.jsonl", 2)], np.eye(2, 3))
>>> keys.decode().splitlines()[1]
'{"file": "docs.jsonl", "line": 2}'
"""

from __future__ import annotations

import glob
import io
import json
from pathlib import Path

import numpy as np

from tfllm.errors import InputError


def shard_payload(keys: list[tuple[str, int]], rows: np.ndarray) -> tuple[bytes, bytes]:
    """The bytes of one shard's `.npy` and `.jsonl`."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(rows, dtype=np.float32))
    lines = "".join(json.dumps({"file": path, "line": line}, ensure_ascii=False) + "\n"
                    for path, line in keys)
    return buffer.getvalue(), lines.encode("utf-8")


def manifest(version: Path, artifact: str, inputs: str) -> dict:
    """What made the shards: the export and its fingerprint (as `TextEmbedder` computes it)."""
    from tfllm.embeddings.embed import fingerprint_files

    artifacts = json.loads((version / "model_config.json").read_text()).get(
        "artifacts") or {"onnx": "model.onnx"}
    return {"model": str(version), "artifact": artifact, "inputs": inputs,
            "fingerprint": fingerprint_files([version / artifacts[artifact],
                                              version / "tokenizer.json"])}


def read_embedding_shards(prefix: str, fingerprint: str) -> dict[tuple[str, int], np.ndarray]:
    """Every row under `prefix` by (resolved file, line), after checking that the manifest's
    fingerprint is `fingerprint` (the weights the caller will query with)."""
    manifest_path = Path(prefix + "-embeddings.json")
    if not manifest_path.is_file():
        raise InputError(f"--embeddings {prefix}: no {manifest_path.name} (the manifest a "
                         "finished `tfllm batch --task embed` writes)")
    made = json.loads(manifest_path.read_text(encoding="utf-8"))
    if made.get("fingerprint") != fingerprint:
        raise InputError(f"--embeddings {prefix}: made with {made.get('model')}, whose "
                         "weights differ from --model's; embed with the same model")
    rows: dict[tuple[str, int], np.ndarray] = {}
    for keys in sorted(glob.glob(glob.escape(prefix) + "-embeddings-*.jsonl")):
        values = np.load(keys.removesuffix(".jsonl") + ".npy")
        with open(keys, encoding="utf-8") as f:
            for line, row in zip(f, values, strict=True):
                key = json.loads(line)
                rows[(str(Path(key["file"]).resolve()), int(key["line"]))] = row
    return rows
