"""Classify text on an edge device with a tfllm `.tflite` artifact: LiteRT + tokenizers, no TF.

    pip install ai-edge-litert tokenizers numpy
    python docs/edge_classify.py REPO/NAME/VERSION "a gripping, beautifully acted film"

The version folder written by `tfllm export` holds everything needed: the `.tflite` file,
`vocab.txt`, `labels.json` and `model_config.json` (max_len, lowercase).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from tokenizers import BertWordPieceTokenizer


def classify(version_dir: str, texts: list[str], artifact: str = "model-dynamic.tflite",
             num_threads: int | None = None) -> list:
    """Label and probability per text; `num_threads` defaults to every core (LiteRT's own
    default is one thread)."""
    folder = Path(version_dir)
    config = json.loads((folder / "model_config.json").read_text())
    labels = json.loads((folder / "labels.json").read_text())
    tokenizer = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=config["lowercase"])
    tokenizer.enable_truncation(config["max_len"])
    tokenizer.enable_padding()
    encodings = tokenizer.encode_batch(texts)
    inputs = {
        "input_ids": np.array([e.ids for e in encodings], np.int32),
        "attention_mask": np.array([e.attention_mask for e in encodings], np.int32),
        "token_type_ids": np.array([e.type_ids for e in encodings], np.int32),
    }
    interpreter = Interpreter(model_path=str(folder / artifact),
                              num_threads=num_threads or os.cpu_count() or 1)
    runner = interpreter.get_signature_runner()
    logits = runner(**inputs)["logits"]
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    return [{"label": labels[int(p.argmax())], "probability": float(p.max())}
            for p in probabilities]


if __name__ == "__main__":
    for text, result in zip(sys.argv[2:], classify(sys.argv[1], sys.argv[2:]), strict=True):
        print(json.dumps({"text": text, **result}))
