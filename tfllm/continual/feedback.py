"""`tfllm continual --feedback FILE --init RUN_DIR`: the next version of a served classifier,
trained on what users said it got wrong, without forgetting what it knew.

Read top to bottom: read the feedback lines the server appended (`tfllm_serving.feedback`;
a torn last line is skipped and counted; a label the run's head does not hold stops the run
naming the line) -> hold out a stratified 20% of them (the new domain's eval) -> load the
run with its head -> mix in `replay_rows` rows of the run's own training data (seeded),
so that the old task is rehearsed -> fit with the run's recipe -> score the feedback eval
rows and the run's own eval rows -> a RUN_DIR like any fine-tune (metrics.json last).
`tfllm export --regression-data OLD_TEST` then refuses a version that forgot.

Example:

    tfllm continual --feedback feedback/feedback.jsonl --init runs/sst2 --out runs/sst2-v2
    tfllm export --model runs/sst2-v2 --out repo/sst2 --version auto \\
        --regression-data data/sst2_dev.tsv
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

from tfllm.data.tasks import Example, stratified_split
from tfllm.errors import InputError
from tfllm.finetune.features import batched, classification_features
from tfllm.finetune.train import (
    FinetuneConfig,
    scheduled_optimizer,
    score_examples,
    task_data,
    write_run,
)


def feedback_examples(path: str | Path, names: list[str], model: str | None = None,
                      ) -> tuple[list[Example], int]:
    """Labelled rows from a feedback file (of `model`, or every model), torn lines counted."""
    from tfllm_serving.feedback import read_feedback

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--feedback {path}: file not found")
    records, skipped = read_feedback(path, model)
    rows = []
    for line, record in enumerate(records, 1):
        if record["label"] not in names:
            raise InputError(f"{path}: record {line}: label {record['label']!r} is not one of "
                             f"the run's labels ({', '.join(names[:20])})")
        rows.append(Example(record["text"], record["label"], source=str(path), line=line))
    if len(rows) < 2:
        raise InputError(f"{path}: {len(rows)} usable feedback records; need at least 2")
    return rows, skipped


def train_from_feedback(feedback: str | Path, init: str | Path, out: str | Path,
                        cfg: FinetuneConfig, replay_rows: int = 1000,
                        model_name: str | None = None, quiet: bool = False) -> dict:
    """Fine-tune `init`'s classifier on feedback + replay of its own training rows; write
    `out` as a RUN_DIR. `cfg` is the run's config (with any --set overrides)."""
    from tfllm.finetune.inference import load_run

    out = Path(out)
    if (out / "metrics.json").is_file():
        raise InputError(f"{out} already holds a finished run (metrics.json); choose another --out")
    if cfg.task.type != "classification":
        raise InputError(f"--feedback is for classifiers; {init} is {cfg.task.type}")

    # 1. Feedback (new domain) and the run's own rows (old domain).
    model, tokenizer, names, _ = load_run(init)
    rows, skipped = feedback_examples(feedback, names, model_name)
    train_new, eval_new = stratified_split(rows, 0.2, cfg.task.split_seed)
    train_old, eval_old, _, _ = task_data(cfg)
    order = np.random.default_rng(cfg.train.seed).permutation(len(train_old))[:replay_rows]
    replay = [train_old[i] for i in sorted(order)]

    # 2. Fit with the run's recipe, from where the run left off.
    keras.utils.set_random_seed(cfg.train.seed)
    train = train_new + replay
    x = classification_features(tokenizer, train, cfg.task.max_len, cfg.task.truncation)
    index = {name: i for i, name in enumerate(names)}
    y = np.eye(len(names), dtype="float32")[[index[e.label] for e in train]]
    model.compile(optimizer=scheduled_optimizer(cfg.train, len(train)),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    history = model.fit(batched(x, y, cfg.train.batch_size, True, cfg.train.seed),
                        epochs=cfg.train.epochs, verbose=0 if quiet else 1,
                        callbacks=[keras.callbacks.TensorBoard(str(out / "logs"))]).history

    # 3. Scores on both domains, then the RUN_DIR.
    # a handful of records leaves no held-out row: then the scores are on what it trained on
    metrics = score_examples(model, tokenizer, eval_new or train_new, names, cfg.task, quiet=True)
    old = score_examples(model, tokenizer, eval_old, names, cfg.task, quiet=True)
    metrics.update({
        "eval_source": (f"{feedback}: held-out 20% of the feedback (stratified)" if eval_new
                        else f"{feedback}: the feedback it trained on (too few to hold out)"),
        "old_eval_accuracy": old["accuracy"], "old_eval_examples": len(eval_old),
        "feedback": {"file": str(feedback), "records": len(rows), "skipped_lines": skipped,
                     "train": len(train_new), "eval": len(eval_new)},
        "replay_rows": len(replay), "train_examples": len(train), "eval_examples": len(eval_new),
        "train_seconds": round(time.perf_counter() - started, 1), "epochs_run": cfg.train.epochs,
        "history": {k: [round(float(v), 6) for v in vs] for k, vs in history.items()},
        "init": str(init), "init_kind": "run_dir", "method": cfg.method.name})
    write_run(out, model, model.backbone, Path(init) / "tokenizer", cfg, metrics, names,
              history)
    if not quiet:
        print(f"continual --feedback -> {out}: feedback eval accuracy {metrics['accuracy']:.4f}, "
              f"the run's own eval {old['accuracy']:.4f}")
    return metrics
