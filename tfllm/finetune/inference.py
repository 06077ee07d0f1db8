"""`tfllm evaluate` and `tfllm predict` on a fine-tuned RUN_DIR (classification or NER).

Example:

    tfllm evaluate --model RUN_DIR --data ../shared/data/sst2/dev.tsv
    tfllm predict --model RUN_DIR "a gripping film" "a dull mess"   # JSONL on stdout
    tfllm evaluate --model NER_RUN_DIR --data ../shared/data/conll2003/test.txt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tfllm.errors import InputError

RUN_FILES = ("model.keras", "labels.json", "config.yaml", "tokenizer/tokenizer.json")


def load_run(run_dir: str | Path):
    """(model, tokenizer, label names, config) of a finished fine-tuning RUN_DIR."""
    from tfllm_serving.wordpiece import load_tokenizer

    from tfllm.config import load_config
    from tfllm.finetune.train import FinetuneConfig
    from tfllm.models.run_dir import load_run_model

    run_dir = Path(run_dir)
    missing = [name for name in RUN_FILES if not (run_dir / name).exists()]
    if missing:
        raise InputError(f"--model {run_dir}: not a fine-tuned RUN_DIR (missing {', '.join(missing)})")
    model = load_run_model(run_dir)
    names = json.loads((run_dir / "labels.json").read_text())
    cfg = load_config(FinetuneConfig, run_dir / "config.yaml")
    return model, load_tokenizer(run_dir / "tokenizer"), names, cfg


def evaluate_run(run_dir: str | Path, data: str | Path, quiet: bool = False,
                 decoding: str | None = None) -> dict:
    """Task metrics of the RUN_DIR's model on a labelled file (the run's column settings;
    NER tags decoded as `decoding`, by default the run's)."""
    from tfllm.data.tasks import check_known_labels, read_examples, read_tagged
    from tfllm.finetune.tagging import check_decoding
    from tfllm.finetune.train import score_examples

    model, tokenizer, names, cfg = load_run(run_dir)
    task = cfg.task
    if decoding and task.type != "token_classification":
        raise InputError(f"--decoding is for NER runs; {run_dir} is {task.type}")
    if task.type == "token_classification":
        task.decoding = decoding or task.decoding
        examples = read_tagged(data, tag_column=task.tag_column)
        # IOB1 gold tags scored against BIO-decoded predictions would give a wrong F1, silently
        check_decoding(examples, task.decoding)
    else:
        examples = read_examples(data, text_column=task.text_column,
                                 label_column=task.label_column,
                                 text_pair_column=task.text_pair_column, fmt=task.format)
    check_known_labels(examples, names, "evaluation")
    metrics = score_examples(model, tokenizer, examples, names, task, quiet=quiet,
                             progress=not quiet)
    metrics["examples"] = len(examples)
    if task.type == "token_classification":
        metrics["decoding"] = task.decoding
    if not quiet:
        keys = ("entity_f1", "entity_precision", "entity_recall", "decoding") \
            if "entity_f1" in metrics else ("accuracy", "macro_f1")
        print(json.dumps({k: metrics[k] for k in (*keys, "examples")}))
    return metrics


def predict_texts(run_dir: str | Path, texts: list[str], out=None) -> list[dict]:
    """Per text: label and probabilities (classification) or words, tags and entities (NER),
    written as JSON lines to `out` (stdout)."""
    import tensorflow as tf

    from tfllm.data.tasks import Example
    from tfllm.finetune.features import predict_logits

    if not texts:
        raise InputError("no texts to predict (give TEXT arguments or --file)")
    model, tokenizer, names, cfg = load_run(run_dir)
    out = out or sys.stdout
    rows = []
    if cfg.task.type == "token_classification":
        from tfllm.models.tagger import TokenTagger

        tagger = TokenTagger(model, tokenizer, names, cfg.task.max_len, cfg.task.decoding)
        rows = [{"text": text, **row} for text, row in zip(texts, tagger(texts), strict=True)]
    else:
        logits = predict_logits(model, tokenizer, [Example(t, names[0]) for t in texts],
                                cfg.task.max_len, truncation=cfg.task.truncation)
        for text, p in zip(texts, tf.nn.softmax(logits).numpy(), strict=True):
            rows.append({"text": text, "label": names[int(p.argmax())],
                         "probabilities": {name: round(float(v), 6)
                                           for name, v in zip(names, p, strict=True)}})
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows
