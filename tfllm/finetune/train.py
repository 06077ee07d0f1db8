"""`tfllm finetune` for sequence classification (single texts and pairs) with Keras `fit`.

Read top to bottom: read and check the data -> load `--init` -> tokenize (TF-free, the
same ids as the in-graph tokenizer) -> build `keras_hub.models.BertTextClassifier` ->
fit with warmup + decay, early stopping, BackupAndRestore, TensorBoard -> evaluate ->
write the RUN_DIR (metrics.json last: its presence marks a finished run).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfllm.data.tasks import (
    Example,
    check_known_labels,
    expand_path,
    label_set,
    read_examples,
    stratified_split,
)
from tfllm.errors import InputError
from tfllm.finetune.metrics import classification_metrics, save_plots
from tfllm.models.backbone import SIZES, BackboneConfig, build_backbone
from tfllm.models.checkpoints import load_checkpoint
from tfllm.models.run_dir import save_run_dir
from tfllm.tokenization.wordpiece import encode_batch, load_tokenizer
from tfllm.training.optimizer import OptimizerConfig, build_optimizer


@dataclass
class TaskConfig:
    """Which files, which columns."""

    type: str = "classification"
    train: str = ""
    eval: str | None = None
    test: str | None = None
    format: str | None = None  # csv | tsv | jsonl; None = from the extension
    text_column: str | None = None  # name or index; None = a text-like column
    text_pair_column: str | None = None
    label_column: str | None = "label"
    eval_split: float = 0.1  # held out from train when there is no eval file
    split_seed: int = 42
    max_train_examples: int | None = None  # subsample (seeded) for CPU budgets
    max_len: int = 128


@dataclass
class ModelConfig:
    """Head and, for `--init none`, the size and tokenizer of the random backbone."""

    size: str = "mini"
    tokenizer: str | None = None
    dropout: float = 0.1


@dataclass
class FinetuneTrainConfig:
    batch_size: int = 32
    epochs: int = 3
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    clipnorm: float | None = 1.0
    label_smoothing: float = 0.0
    class_weights: bool = False
    early_stopping_patience: int = 0  # epochs without eval accuracy gain; 0 = off
    seed: int = 42


@dataclass
class FinetuneConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)


def _load_splits(task: TaskConfig) -> tuple[list[Example], list[Example], list[Example] | None]:
    if not task.train:
        raise InputError("no training file: set task.train or pass --train")
    columns = dict(text_column=task.text_column, label_column=task.label_column,
                   text_pair_column=task.text_pair_column, fmt=task.format)
    train = read_examples(task.train, **columns)
    if task.eval:
        evaluation = read_examples(task.eval, **columns)
    else:
        train, evaluation = stratified_split(train, task.eval_split, task.split_seed)
    test = read_examples(task.test, **columns) if task.test else None
    if task.max_train_examples and len(train) > task.max_train_examples:
        rng = np.random.default_rng(task.split_seed)
        keep = np.sort(rng.choice(len(train), task.max_train_examples, replace=False))
        train = [train[i] for i in keep]
    return train, evaluation, test


def _features(tokenizer, examples: list[Example], max_len: int) -> dict[str, np.ndarray]:
    pairs = [e.text_pair or "" for e in examples] if examples[0].text_pair is not None else None
    enc = encode_batch(tokenizer, [e.text for e in examples], pairs, max_len=max_len,
                       pad_to_max_len=True)
    return {"token_ids": enc["input_ids"], "segment_ids": enc["token_type_ids"],
            "padding_mask": enc["attention_mask"]}


def _dataset(x: dict, y: np.ndarray | None, batch: int, shuffle: bool, seed: int):
    ds = tf.data.Dataset.from_tensor_slices((x, y) if y is not None else x)
    if shuffle:
        ds = ds.shuffle(len(x["token_ids"]), seed=seed, reshuffle_each_iteration=True)

    def trim(features, labels=None):
        # Pad to the batch's longest row, not max_len: most sentences are short.
        width = tf.reduce_max(tf.reduce_sum(features["padding_mask"], axis=1))
        features = {k: v[:, :width] for k, v in features.items()}
        return features if labels is None else (features, labels)

    return ds.batch(batch).map(trim, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def build_classifier(backbone, num_classes: int, dropout: float):
    """keras-hub's BERT classifier head (pooled output -> dropout -> dense) on `backbone`."""
    import keras_hub

    return keras_hub.models.BertTextClassifier(backbone, num_classes=num_classes,
                                               preprocessor=None, dropout=dropout)


def predict_logits(model, tokenizer, examples: list[Example], max_len: int,
                   batch: int = 64) -> np.ndarray:
    x = _features(tokenizer, examples, max_len)
    return model.predict(_dataset(x, None, batch, False, 0), verbose=0)


def finetune(cfg: FinetuneConfig, init: str, out: str | Path, quiet: bool = False) -> dict:
    """Fine-tune, evaluate and write RUN_DIR; resume from checkpoints/ if unfinished."""
    if cfg.task.type != "classification":
        raise InputError(f"task.type {cfg.task.type!r} is not supported yet (classification)")
    out = Path(out)
    if (out / "metrics.json").is_file():
        raise InputError(f"{out} already holds a finished run (metrics.json); choose another --out")
    train, evaluation, test = _load_splits(cfg.task)
    names = label_set([e.label for e in train])
    if len(names) < 2:
        raise InputError(f"{cfg.task.train}: only one label ({names[0]!r}) in the training data")
    check_known_labels(evaluation, names, "eval")
    if test:
        check_known_labels(test, names, "test")
    index = {name: i for i, name in enumerate(names)}

    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)
    size = SIZES.get(cfg.model.size)
    if size is None:
        raise InputError(f"unknown model.size {cfg.model.size!r} (choose from {', '.join(SIZES)})")
    checkpoint = load_checkpoint(
        init, out, lambda vocab: build_backbone(BackboneConfig(**size), vocab),
        expand_path(cfg.model.tokenizer) if cfg.model.tokenizer else None)
    tokenizer = load_tokenizer(checkpoint.tokenizer_dir)
    model = build_classifier(checkpoint.backbone, len(names), cfg.model.dropout)

    def xy(examples):
        labels = np.array([index[e.label] for e in examples])
        return _features(tokenizer, examples, cfg.task.max_len), labels

    x_train, y_train = xy(train)
    x_eval, y_eval = xy(evaluation)
    one_hot = np.eye(len(names), dtype="float32")
    train_ds = _dataset(x_train, one_hot[y_train], cfg.train.batch_size, True, cfg.train.seed)
    eval_ds = _dataset(x_eval, one_hot[y_eval], 64, False, 0)
    steps = math.ceil(len(train) / cfg.train.batch_size) * cfg.train.epochs
    optimizer = build_optimizer(OptimizerConfig(
        learning_rate=cfg.train.learning_rate, warmup_steps=int(cfg.train.warmup_ratio * steps),
        weight_decay=cfg.train.weight_decay, clipnorm=cfg.train.clipnorm), steps)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                  label_smoothing=cfg.train.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    callbacks = [keras.callbacks.BackupAndRestore(str(out / "checkpoints")),
                 keras.callbacks.TensorBoard(str(out / "logs"))]
    if cfg.train.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=cfg.train.early_stopping_patience,
            restore_best_weights=True))
    class_weight = None
    if cfg.train.class_weights:
        counts = np.bincount(y_train, minlength=len(names))
        class_weight = {i: len(y_train) / (len(names) * max(c, 1)) for i, c in enumerate(counts)}
    started = time.perf_counter()
    history = model.fit(train_ds, validation_data=eval_ds, epochs=cfg.train.epochs,
                        callbacks=callbacks, class_weight=class_weight,
                        verbose=0 if quiet else 1)
    train_seconds = time.perf_counter() - started

    eval_pred = predict_logits(model, tokenizer, evaluation, cfg.task.max_len).argmax(-1)
    metrics = classification_metrics(y_eval, eval_pred, names, quiet=quiet)
    metrics.update({
        "train_examples": len(train), "eval_examples": len(evaluation),
        "train_seconds": round(train_seconds, 1),
        "train_samples_per_second": round(len(history.history["loss"]) * len(train)
                                          / train_seconds, 1),
        "epochs_run": len(history.history["loss"]), "init": init,
        "init_kind": checkpoint.kind,
        "trainable_params": int(sum(np.prod(v.shape) for v in model.trainable_weights)),
    })
    if test:
        y_test = np.array([index[e.label] for e in test])
        test_pred = predict_logits(model, tokenizer, test, cfg.task.max_len).argmax(-1)
        metrics["test"] = classification_metrics(y_test, test_pred, names, quiet=True)
    save_plots(out, history.history, metrics["confusion_matrix"], names)
    save_run_dir(out, model, model.backbone, checkpoint.tokenizer_dir, cfg, metrics, names)
    if not quiet:
        print(f"finetune -> {out}: accuracy {metrics['accuracy']:.4f}, "
              f"macro_f1 {metrics['macro_f1']:.4f}")
    return metrics
