"""`tfllm evaluate` and `tfllm predict` on a fine-tuned classification RUN_DIR.

Example:

    tfllm evaluate --model RUN_DIR --data ../shared/data/sst2/dev.tsv
    tfllm predict --model RUN_DIR "a gripping film" "a dull mess"   # JSONL on stdout
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tfllm.errors import InputError

RUN_FILES = ("model.keras", "labels.json", "config.yaml", "tokenizer/tokenizer.json")


def load_run(run_dir: str | Path):
    """(model, tokenizer, label names, config) of a finished fine-tuning RUN_DIR."""
    import keras

    from tfllm.config import load_config
    from tfllm.finetune.train import FinetuneConfig
    from tfllm.tokenization.wordpiece import load_tokenizer

    run_dir = Path(run_dir)
    missing = [name for name in RUN_FILES if not (run_dir / name).exists()]
    if missing:
        raise InputError(f"--model {run_dir}: not a fine-tuned RUN_DIR (missing {', '.join(missing)})")
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True)
    names = json.loads((run_dir / "labels.json").read_text())
    cfg = load_config(FinetuneConfig, run_dir / "config.yaml")
    return model, load_tokenizer(run_dir / "tokenizer"), names, cfg


def evaluate_run(run_dir: str | Path, data: str | Path, quiet: bool = False) -> dict:
    """Task metrics of the RUN_DIR's model on a labelled file (the run's column settings)."""
    from tfllm.data.tasks import check_known_labels, read_examples
    from tfllm.finetune.metrics import classification_metrics
    from tfllm.finetune.train import predict_logits

    model, tokenizer, names, cfg = load_run(run_dir)
    task = cfg.task
    examples = read_examples(data, text_column=task.text_column, label_column=task.label_column,
                             text_pair_column=task.text_pair_column, fmt=task.format)
    check_known_labels(examples, names, "evaluation")
    labels = np.array([names.index(e.label) for e in examples])
    predicted = predict_logits(model, tokenizer, examples, task.max_len).argmax(-1)
    metrics = classification_metrics(labels, predicted, names, quiet=quiet)
    metrics["examples"] = len(examples)
    if not quiet:
        print(json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1", "examples")}))
    return metrics


def predict_texts(run_dir: str | Path, texts: list[str], out=None) -> list[dict]:
    """Label and probabilities per text, written as JSON lines to `out` (stdout)."""
    import tensorflow as tf

    from tfllm.data.tasks import Example
    from tfllm.finetune.train import predict_logits

    if not texts:
        raise InputError("no texts to predict (give TEXT arguments or --file)")
    model, tokenizer, names, cfg = load_run(run_dir)
    logits = predict_logits(model, tokenizer, [Example(t, names[0]) for t in texts],
                            cfg.task.max_len)
    probabilities = tf.nn.softmax(logits).numpy()
    out = out or sys.stdout
    rows = []
    for text, p in zip(texts, probabilities, strict=True):
        row = {"text": text, "label": names[int(p.argmax())],
               "probabilities": {name: round(float(v), 6) for name, v in zip(names, p, strict=True)}}
        rows.append(row)
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows
