"""`tfllm finetune` with `task.type: embedding`: train a sentence embedder on text pairs.

Read top to bottom: read the pairs (scored, STS-B style, or positive pairs) and the eval
pairs -> load `--init` and put mean pooling + L2 norm on its backbone -> one embedder for
both sides of a pair (siamese), the sides' embeddings side by side as the output -> fit with
CoSENT, cosine or in-batch-negatives loss, warmup + decay, the eval pairs' Spearman after
every epoch (early stopping and the kept epoch watch it) -> Spearman/Pearson of cosine vs
gold on the eval (and test) pairs -> the RUN_DIR, whose `model.keras` is the embedder.

Example:

    tfllm finetune --config configs/finetune/stsb.yaml --init "$MINILM" --out runs/stsb
    tfllm embed --model runs/stsb --input texts.txt --out texts.npy
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tfllm_serving.wordpiece import encode_batch

from tfllm.embeddings.embed import embed_texts
from tfllm.embeddings.losses import LOSSES, pair_loss
from tfllm.embeddings.pooling import build_embedder
from tfllm.embeddings.similarity import ScoredPairs, correlations, read_pairs, retrieval_scores
from tfllm.errors import InputError
from tfllm.finetune.peft import trainable_count
from tfllm.finetune.train import EvalMetric, FinetuneConfig, apply_method, load_start
from tfllm.models.run_dir import save_run_dir
from tfllm.training.optimizer import OptimizerConfig, build_optimizer


class PairEmbedder(keras.Model):
    """One embedder applied to both texts of a pair: `{"first", "second"}` features in, the
    two unit embeddings side by side out ([batch, 2 * hidden]), what the pair losses read."""

    def __init__(self, embedder: keras.Model, **kwargs) -> None:
        super().__init__(**kwargs)
        self.embedder = embedder

    def call(self, inputs: dict, training: bool = False):
        return keras.ops.concatenate([self.embedder(inputs["first"], training=training),
                                      self.embedder(inputs["second"], training=training)], -1)


def _pairs(task, path: str) -> ScoredPairs:
    return read_pairs(path, task.format, task.text_column, task.text_pair_column,
                      task.label_column)


def read_task_pairs(task) -> tuple[ScoredPairs, ScoredPairs, ScoredPairs | None]:
    """The task's (train, eval, test) pairs: eval from its file or a seeded share of train."""
    train = _pairs(task, task.train)
    if task.eval:
        evaluation = _pairs(task, task.eval)
    else:  # a seeded share of train, never trained on
        order = np.random.default_rng(task.split_seed).permutation(len(train.first))
        cut = max(1, round(len(order) * task.eval_split))
        def take(rows: np.ndarray, pairs: ScoredPairs = train) -> ScoredPairs:
            rows = np.sort(rows)
            return ScoredPairs([pairs.first[i] for i in rows], [pairs.second[i] for i in rows],
                               pairs.scores[rows])

        train, evaluation = take(order[cut:]), take(order[:cut])
    if task.max_train_examples and len(train.first) > task.max_train_examples:
        keep = np.sort(np.random.default_rng(task.split_seed).choice(
            len(train.first), task.max_train_examples, replace=False))
        train = ScoredPairs([train.first[i] for i in keep], [train.second[i] for i in keep],
                            train.scores[keep])
    return train, evaluation, _pairs(task, task.test) if task.test else None


def pair_batches(tokenizer, pairs: ScoredPairs, max_len: int, batch: int,
                 seed: int) -> tf.data.Dataset:
    """Shuffled batches of both sides' features, each side cut to its longest row."""
    def side(texts: list[str]) -> dict:
        enc = encode_batch(tokenizer, texts, max_len=max_len, pad_to_max_len=True)
        return {"token_ids": enc["input_ids"], "segment_ids": enc["token_type_ids"],
                "padding_mask": enc["attention_mask"]}

    x = {"first": side(pairs.first), "second": side(pairs.second)}
    ds = tf.data.Dataset.from_tensor_slices((x, pairs.scores.astype("float32")))
    ds = ds.shuffle(len(pairs.first), seed=seed, reshuffle_each_iteration=True).batch(batch)

    def trim(features: dict, scores):
        def cut(f: dict) -> dict:
            width = tf.reduce_max(tf.reduce_sum(f["padding_mask"], axis=1))
            return {k: v[:, :width] for k, v in f.items()}

        return {"first": cut(features["first"]), "second": cut(features["second"])}, scores

    return ds.map(trim, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def compile_pair_model(cfg: FinetuneConfig, backbone: Any, steps: int) -> PairEmbedder:
    """The run's method applied to `backbone`, mean pooling + L2 norm on it, one embedder for
    both sides, compiled with the task's pair loss and warmup + decay over `steps`."""
    apply_method(cfg.method, backbone)
    model = PairEmbedder(build_embedder(backbone))
    model.compile(optimizer=build_optimizer(OptimizerConfig(
        learning_rate=cfg.train.learning_rate, warmup_steps=int(cfg.train.warmup_ratio * steps),
        weight_decay=cfg.train.weight_decay, clipnorm=cfg.train.clipnorm), steps),
        loss=pair_loss(cfg.task.loss, score_max=cfg.task.score_max))
    return model


def _scores(embedder: Any, tokenizer, pairs: ScoredPairs, max_len: int,
            progress: bool = False, retrieval: bool = False) -> dict[str, float]:
    """Spearman/Pearson of the pairs' cosines (and with `retrieval` the pairs as a search
    task: MRR@10 and recall@10)."""
    first = embed_texts(embedder, tokenizer, pairs.first, max_len, progress=progress)
    second = embed_texts(embedder, tokenizer, pairs.second, max_len)
    return {**correlations(first, second, pairs.scores),
            **(retrieval_scores(pairs, first, second) if retrieval else {})}


def finetune_embedder(cfg: FinetuneConfig, init: str, out: str | Path,
                      quiet: bool = False) -> dict:
    """Train, score and write the RUN_DIR of a sentence embedder; resumes from checkpoints/."""
    task = cfg.task
    if task.loss not in LOSSES:
        raise InputError(f"task.loss must be one of {', '.join(LOSSES)}, not {task.loss!r}")
    if task.truncation != "head" or cfg.method.fgm_epsilon or cfg.augment.copies:
        raise InputError("embedding runs truncate at the head, without FGM or augmentation")
    if not task.train:
        raise InputError("no training file: set task.train or pass --train")
    out = Path(out)
    if (out / "metrics.json").is_file():
        raise InputError(f"{out} already holds a finished run (metrics.json); choose another --out")

    # 1. Pairs.
    train, evaluation, test = read_task_pairs(task)

    # 2. Model: the checkpoint's backbone, mean pooling + L2 norm, shared by both sides.
    checkpoint, tokenizer = load_start(cfg, init, out)
    backbone = checkpoint.backbone
    max_len = min(task.max_len, backbone.max_sequence_length)
    steps = math.ceil(len(train.first) / cfg.train.batch_size) * cfg.train.epochs
    model = compile_pair_model(cfg, backbone, steps)
    embedder = model.embedder

    # 3. Fit: the eval pairs' Spearman after every epoch; the best epoch is kept.
    train_ds = pair_batches(tokenizer, train, max_len, cfg.train.batch_size, cfg.train.seed)
    model(next(iter(train_ds))[0])  # builds it (BackupAndRestore needs a built model)
    patience = cfg.train.early_stopping_patience or cfg.train.epochs  # 0: never stop early
    callbacks = [EvalMetric("spearman", lambda: _scores(embedder, tokenizer, evaluation,
                                                        max_len)["spearman"]),
                 keras.callbacks.BackupAndRestore(str(out / "checkpoints")),
                 keras.callbacks.TensorBoard(str(out / "logs")),
                 keras.callbacks.EarlyStopping(monitor="val_spearman", mode="max",
                                               patience=patience, restore_best_weights=True)]
    started = time.perf_counter()
    history = model.fit(train_ds, epochs=cfg.train.epochs, callbacks=callbacks,
                        verbose=0 if quiet else 1)
    train_seconds = time.perf_counter() - started

    # 4. Scores and the RUN_DIR.
    epochs_run = len(history.history["loss"])
    metrics = {**_scores(embedder, tokenizer, evaluation, max_len, progress=not quiet),
               "loss": task.loss, "train_pairs": len(train.first),
               "eval_pairs": len(evaluation.first),
               "eval_source": task.eval or f"{task.train}: held-out split {task.eval_split} "
                                           f"(seed {task.split_seed})",
               "test_source": task.test, "max_len": max_len,
               "train_seconds": round(train_seconds, 1),
               "train_pairs_per_second": round(epochs_run * len(train.first) / train_seconds, 1),
               "epochs_run": epochs_run,
               "best_epoch": int(np.argmax(history.history["val_spearman"])) + 1,
               "history": {k: [round(float(v), 6) for v in values]
                           for k, values in history.history.items()},
               "init": init, "init_kind": checkpoint.kind, "method": cfg.method.name,
               "trainable_params": trainable_count(embedder),
               "total_params": int(embedder.count_params())}
    if test is not None:
        metrics["test"] = _scores(embedder, tokenizer, test, max_len, retrieval=True)
    save_run_dir(out, embedder, backbone, checkpoint.tokenizer_dir, cfg, metrics)
    if not quiet:
        print(f"finetune -> {out}: eval Spearman {metrics['spearman']:.2f}"
              + (f", test Spearman {metrics['test']['spearman']:.2f}" if test else ""))
    return metrics
