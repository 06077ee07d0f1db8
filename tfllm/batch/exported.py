"""An exported version folder on onnxruntime, without TensorFlow: the rows `tfllm predict`
prints for it and `tfllm batch` writes, from the same code the server runs
(`tfllm_serving.runtime`: the artifact's own tokenizer, truncation and decoding).

Each text is tokenized on its own and the texts run merged into padded batches of similar
length (`ModelRuntime.run_many`), so a row's answer does not depend on its neighbours beyond
float rounding.

Example (a repository written by `tfllm export`):

    model = ExportedModel("out/models/sst2")
    model.rows(["a fine film"])   # [{"label": "positive", "probabilities": {...}}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tfllm.errors import InputError


def exported_version(model: str | Path) -> Path | None:
    """The version folder `model` names (`REPO/NAME/VERSION`, or `REPO/NAME`: its highest
    complete version), or None when `model` is not an export."""
    folder = Path(model)
    if (folder / "model_config.json").is_file():
        return folder
    versions = [p for p in folder.iterdir() if p.name.isdigit()
                and (p / "model_config.json").is_file()] if folder.is_dir() else []
    return max(versions, key=lambda p: int(p.name)) if versions else None


def require_export(model: str | Path) -> Path:
    """`exported_version(model)`, or an InputError saying what `--model` must be."""
    version = exported_version(model)
    if version is None:
        raise InputError(f"--model {model}: not an exported model (REPO/NAME[/VERSION] "
                         "with model_config.json)")
    return version


class ExportedModel:
    """One exported version loaded once; `rows` for classifiers and taggers, `embeddings`
    for sentence embedders."""

    def __init__(self, model: str | Path, artifact: str = "onnx",
                 intra_op_threads: int = 0) -> None:
        from tfllm_serving.runtime import ModelRuntime

        version = require_export(model)
        self.version = version
        self.runtime = ModelRuntime.load(version, artifact, intra_op_threads=intra_op_threads)
        self.task = self.runtime.task

    def _run(self, texts: list[str]) -> tuple[list[Any], list[Any]]:
        encoded = [self.runtime.encode_texts([text]) for text in texts]
        return encoded, self.runtime.run_many(encoded)

    def rows(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per text: `label` and `probabilities` (classification), or `words`,
        `word_labels` and `entities` (token classification)."""
        if self.task == "embedding":
            raise InputError(f"{self.version} is a sentence embedder: use --task embed")
        encoded, outputs = self._run(texts)
        if self.task == "token_classification":
            from tfllm_serving.tagging import decode_tags, entities

            rows = []
            for batch, out in zip(encoded, outputs, strict=True):
                words = batch.words[0]
                tags = decode_tags(batch.first_token, out.logits, self.runtime.labels,
                                   [len(words)], self.runtime.decoding)[0]
                rows.append({"words": words, "word_labels": tags,
                             "entities": entities(tags, words)})
            return rows
        names = self.runtime.labels
        return [{"label": names[int(out.probabilities[0].argmax())],
                 "probabilities": {name: round(float(p), 6)
                                   for name, p in zip(names, out.probabilities[0], strict=True)}}
                for out in outputs]

    def embeddings(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] float32 rows (L2-normalised by the exported graph)."""
        if self.task != "embedding":
            raise InputError(f"{self.version} is a {self.task} model, not a sentence embedder")
        _, outputs = self._run(texts)
        return np.concatenate([out.embedding for out in outputs]).astype(np.float32)
