"""`tfllm finetune`: sequence classification (single texts and pairs) and token
classification (NER) with Keras `fit`; full, frozen or LoRA, optionally adversarial (FGM).

Read top to bottom: read and check the data -> load `--init` -> tokenize (TF-free, the
same ids as the in-graph tokenizer) -> build `keras_hub.models.BertTextClassifier` or the
token classifier -> freeze / LoRA / FGM switches -> fit with warmup + decay, early
stopping on the eval metric, BackupAndRestore, TensorBoard -> evaluate -> write the
RUN_DIR (metrics.json last: its presence marks a finished run).

Example:

    tfllm finetune --config configs/finetune/sst2.yaml --init "$(tfllm-minilm-dir)" --out runs/sst2
    tfllm finetune --config configs/finetune/sst2.yaml --init none --out runs/sst2-lora \
        --set method.name=lora --set method.lora_rank=8
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from tfllm_serving.tagging import decode_tags
from tfllm_serving.wordpiece import is_lowercase, load_tokenizer, read_vocab

from tfllm.compression.sparsity import keep_zeros
from tfllm.data.readers import ReadReport
from tfllm.data.tasks import (
    Example,
    check_known_labels,
    expand_path,
    label_set,
    read_examples,
    read_tagged,
    stratified_split,
)
from tfllm.errors import InputError
from tfllm.finetune.adversarial import FGMTrainer
from tfllm.finetune.augment import AugmentConfig, augment_texts
from tfllm.finetune.distill import DistillConfig, Teacher, first_columns_accuracy
from tfllm.finetune.distill import check as check_distill
from tfllm.finetune.features import (
    batched,
    classification_features,
    keras_inputs,
    predict_logits,
    predict_token_logits,
)
from tfllm.finetune.metrics import classification_metrics, entity_metrics, save_plots
from tfllm.finetune.peft import (
    enable_lora,
    freeze,
    save_trained_weights,
    trainable_count,
    with_adapters,
)
from tfllm.finetune.tagging import IGNORE, check_decoding, encode_tagged
from tfllm.models.backbone import SIZES, BackboneConfig, build_backbone
from tfllm.models.checkpoints import Checkpoint, load_checkpoint
from tfllm.models.presets import keras_hub_tokenizer, with_preprocessor
from tfllm.models.run_dir import save_run_dir
from tfllm.models.tagger import build_token_classifier
from tfllm.training.optimizer import OptimizerConfig, build_optimizer

TASKS = ("classification", "token_classification", "embedding")
METHODS = ("full", "freeze", "lora", "adapter")


@dataclass
class TaskConfig:
    """Which files, which columns."""

    type: str = "classification"  # or token_classification (CoNLL files), or embedding (pairs)
    train: str = ""
    eval: str | None = None
    test: str | None = None
    format: str | None = None  # csv | tsv | jsonl | conll | stsb; None = from the extension
    text_column: str | None = None  # name or index; None = a text-like column
    text_pair_column: str | None = None
    label_column: str | None = "label"
    eval_split: float = 0.1  # held out from train when there is no eval file
    test_split: float = 0.0  # > 0: a stratified test split of train, taken first, never trained on
    split_seed: int = 42
    max_train_examples: int | None = None  # subsample (seeded) for CPU budgets
    max_len: int = 128
    truncation: str = "head"  # or head_tail (long single texts)
    tag_column: int = -1  # CoNLL column holding the tag
    decoding: str = "bio"  # NER: "bio" (no entity opens with I-X; Viterbi) or "argmax" (IOB1 tags)
    loss: str = "cosent"  # embedding: cosent | cosine (scored pairs) | mnrl (positive pairs)
    score_max: float = 5.0  # embedding, cosine loss: gold scores are divided by it


@dataclass
class ModelConfig:
    """Head and, for `--init none`, the size and tokenizer of the random backbone."""

    size: str = "mini"
    tokenizer: str | None = None
    dropout: float = 0.1


@dataclass
class MethodConfig:
    """What trains: `full`, `freeze` (embeddings + first `freeze_layers` layers), `lora`
    (query/value low-rank updates + pooler + head) or `adapter` (bottleneck adapters of
    `adapter_size` in every layer + LayerNorms + pooler + head); FGM adversarial training and
    distillation from a teacher run (`tfllm.finetune.distill`) combine with each."""

    name: str = "full"
    freeze_layers: int = 0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    adapter_size: int = 64
    fgm_epsilon: float = 0.0  # > 0 turns FGM on
    distill_from: str | None = None  # a fine-tuned RUN_DIR: its logits become soft targets
    distill_alpha: float = 0.5  # weight of the soft (teacher) term
    distill_temperature: float = 2.0
    # encoder weights that are exactly zero at init (`tfllm prune --sparsity`) stay zero
    keep_sparsity: bool = False


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
    early_stopping_patience: int = 0  # epochs without eval metric gain; 0 = off
    bucket_by_length: bool = False  # batches of similar lengths: less padding, faster epochs
    seed: int = 42


@dataclass
class FinetuneConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)


def subsample(items: list, limit: int | None, seed: int) -> list:
    """At most `limit` items, a seeded random choice kept in order (all when None)."""
    if limit and len(items) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(items), limit, replace=False))
        items = [items[i] for i in keep]
    return items


def _load_examples(task: TaskConfig) -> tuple[list[Example], list[Example], list[Example] | None]:
    # Strict: a bad row in labelled data stops the run (skipping it would skew the metrics).
    columns = dict(text_column=task.text_column, label_column=task.label_column,
                   text_pair_column=task.text_pair_column, fmt=task.format)
    train = read_examples(task.train, **columns, report=ReadReport(strict=True))
    test = (read_examples(task.test, **columns, report=ReadReport(strict=True))
            if task.test else None)
    if task.test_split > 0:
        if task.test:
            raise InputError("set task.test (a file) or task.test_split (a share of train), "
                             "not both")
        train, test = stratified_split(train, task.test_split, task.split_seed)
    if task.eval:
        evaluation = read_examples(task.eval, **columns, report=ReadReport(strict=True))
    else:
        train, evaluation = stratified_split(train, task.eval_split, task.split_seed)
    return subsample(train, task.max_train_examples, task.split_seed), evaluation, test


def _load_sentences(task: TaskConfig):
    def read(path: str) -> list:
        return read_tagged(path, ReadReport(strict=True), tag_column=task.tag_column)

    train = read(task.train)
    if task.eval:
        evaluation = read(task.eval)
    else:
        order = np.random.default_rng(task.split_seed).permutation(len(train))
        cut = max(1, round(len(train) * task.eval_split))
        evaluation = [train[i] for i in sorted(order[:cut])]
        train = [train[i] for i in sorted(order[cut:])]
    test = read(task.test) if task.test else None
    return subsample(train, task.max_train_examples, task.split_seed), evaluation, test


def _augmented(train: list[Example], cfg: AugmentConfig) -> list[Example]:
    """New training examples from EDA / back-translation of the first text (eval untouched)."""
    if cfg.copies <= 0 and not cfg.back_translate:
        return []
    copies = augment_texts([e.text for e in train], cfg)
    return [Example(text, e.label, e.text_pair, e.source, e.line)
            for e, row in zip(train, copies, strict=True) for text in row]


def task_data(cfg: FinetuneConfig) -> tuple[list, list, list | None, list[str]]:
    """The task's training rows (augmented ones included), eval and test rows (examples, or
    CoNLL sentences for NER) and its label names, every label checked."""
    task = cfg.task
    if task.type == "token_classification":
        train, evaluation, test = _load_sentences(task)
        names = label_set([tag for s in train for tag in s.tags])
        check_decoding(train, task.decoding)
    else:
        train, evaluation, test = _load_examples(task)
        names = label_set([e.label for e in train])
        train = train + _augmented(train, cfg.augment)
    if len(names) < 2:
        raise InputError(f"{task.train}: only one label ({names[0]!r}) in the training data")
    check_known_labels(evaluation, names, "eval")
    if test:
        check_known_labels(test, names, "test")
    return train, evaluation, test, names


def encode_examples(tokenizer: Any, examples: list, task: TaskConfig,
                    index: dict[str, int]) -> tuple[dict, np.ndarray]:
    """Model inputs and integer labels (per token for NER, IGNORE off first word pieces)."""
    if task.type == "token_classification":
        enc = encode_tagged(tokenizer, [s.words for s in examples],
                            [s.tags for s in examples], index, task.max_len)
        return keras_inputs(enc), enc["labels"]
    x = classification_features(tokenizer, examples, task.max_len, task.truncation)
    return x, np.array([index[e.label] for e in examples])


def scheduled_optimizer(train: FinetuneTrainConfig, rows: int) -> Any:
    """AdamW with warmup + decay over `train.epochs` passes of `rows` training rows."""
    steps = math.ceil(rows / train.batch_size) * train.epochs
    return build_optimizer(OptimizerConfig(
        learning_rate=train.learning_rate, warmup_steps=int(train.warmup_ratio * steps),
        weight_decay=train.weight_decay, clipnorm=train.clipnorm), steps)


def load_start(cfg: FinetuneConfig, init: str, out: Path) -> tuple[Checkpoint, Any]:
    """The seeded starting point of a fine-tune: `--init`'s checkpoint (or a random backbone of
    `model.size` for `none`), its tokenizer files copied into `out`, and the tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)
    size = SIZES.get(cfg.model.size)
    if size is None:
        raise InputError(f"unknown model.size {cfg.model.size!r} (choose from {', '.join(SIZES)})")
    checkpoint = load_checkpoint(
        init, out, lambda vocab: build_backbone(BackboneConfig(**size), vocab),
        expand_path(cfg.model.tokenizer) if cfg.model.tokenizer else None)
    return checkpoint, load_tokenizer(checkpoint.tokenizer_dir)


def build_classifier(backbone, num_classes: int, dropout: float):
    """keras-hub's BERT classifier head (pooled output -> dropout -> dense) on `backbone`."""
    import keras_hub

    return keras_hub.models.BertTextClassifier(backbone, num_classes=num_classes,
                                               preprocessor=None, dropout=dropout)


def apply_method(method: MethodConfig, backbone) -> None:
    if method.name not in METHODS:
        raise InputError(f"method.name must be one of {', '.join(METHODS)}, not {method.name!r}")
    if method.keep_sparsity and method.name == "lora":
        raise InputError("method.keep_sparsity does not combine with lora (its update is dense)")
    if method.name == "freeze":
        if not 0 <= method.freeze_layers <= len(backbone.transformer_layers):
            raise InputError(f"method.freeze_layers={method.freeze_layers}: the backbone has "
                             f"{len(backbone.transformer_layers)} layers")
        freeze(backbone, method.freeze_layers)
    elif method.name == "lora":
        if method.lora_rank < 1:
            raise InputError(f"method.lora_rank must be >= 1, got {method.lora_rank}")
        enable_lora(backbone, method.lora_rank, method.lora_alpha)
    if method.keep_sparsity:
        keep_zeros(backbone)


def score_examples(model, tokenizer, examples: list, names: list[str], task: TaskConfig,
                   quiet: bool = False, progress: bool = False) -> dict:
    """The task's metrics.json keys for `model` on labelled examples or CoNLL sentences
    (`quiet` silences the printed report, `progress` shows a progress bar)."""
    if task.type == "token_classification":
        index = {name: i for i, name in enumerate(names)}
        enc = encode_tagged(tokenizer, [s.words for s in examples], None, index, task.max_len)
        logits = predict_token_logits(model, keras_inputs(enc), progress=progress)
        predicted = decode_tags(enc["first_token"], logits, names,
                                [len(s.words) for s in examples], task.decoding)
        return entity_metrics([s.tags for s in examples], predicted, names, quiet=quiet)
    labels = np.array([names.index(e.label) for e in examples])
    predicted = predict_logits(model, tokenizer, examples, task.max_len,
                               truncation=task.truncation, progress=progress).argmax(-1)
    return classification_metrics(labels, predicted, names, quiet=quiet)


class EvalMetric(keras.callbacks.Callback):
    """Adds `val_<name>` to the epoch logs (before EarlyStopping, TensorBoard and History
    read them): the task metric that Keras cannot compute batch by batch (entity F1)."""

    def __init__(self, name: str, score):
        super().__init__()
        self.name, self.score = name, score

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[f"val_{self.name}"] = self.score()


def _run_facts(cfg: FinetuneConfig, init: str, init_kind: str, train_rows: int,
               eval_rows: int, history: dict, train_seconds: float, model: Any) -> dict:
    """metrics.json's record of how the run went: data sources, time, epochs, curves,
    where it started, the method and the parameter counts."""
    task, method = cfg.task, cfg.method
    split = f"(stratified by label, seed {task.split_seed})"
    epochs_run = len(history["loss"])
    return {
        "train_examples": train_rows, "eval_examples": eval_rows,
        "eval_source": task.eval or (f"{task.train}: held-out split {task.eval_split} {split}"
                                     + (" of what the test split left" if task.test_split else "")),
        "test_source": task.test or (f"{task.train}: held-out split {task.test_split} {split}"
                                     if task.test_split else None),
        "train_seconds": round(train_seconds, 1),
        "train_samples_per_second": round(epochs_run * train_rows / train_seconds, 1),
        "epochs_run": epochs_run,
        # per epoch, as training_curves.png plots it (early stopping keeps the best epoch)
        "history": {key: [round(float(v), 6) for v in values] for key, values in history.items()},
        "init": init, "init_kind": init_kind,
        "method": method.name, "fgm_epsilon": method.fgm_epsilon,
        "trainable_params": trainable_count(model), "total_params": int(model.count_params()),
        **({"decoding": task.decoding} if task.type == "token_classification" else {}),
    }


def write_run(out: Path, model: Any, backbone: Any, tokenizer_dir: Path, cfg: FinetuneConfig,
              metrics: dict, names: list[str], history: dict) -> None:
    """The RUN_DIR of a trained model: plots, the LoRA/adapter weights alone, a keras-hub
    task preset for classifiers, then `save_run_dir` (metrics.json last)."""
    save_plots(out, history, metrics["confusion_matrix"], names)
    if cfg.method.name == "lora":
        backbone.save_lora_weights(str(out / "adapter.lora.h5"))
    elif cfg.method.name == "adapter":
        save_trained_weights(model, out / "adapter.safetensors")
    preset = None
    if cfg.task.type == "classification":  # keras-hub's task class: raw strings in, a preset
        vocab = read_vocab(tokenizer_dir / "vocab.txt")
        lowercase = is_lowercase(load_tokenizer(tokenizer_dir))
        preset = with_preprocessor(model, keras_hub_tokenizer(vocab, lowercase),
                                   cfg.task.max_len)
    save_run_dir(out, model, backbone, tokenizer_dir, cfg, metrics, names, preset)


def finetune(cfg: FinetuneConfig, init: str, out: str | Path, quiet: bool = False) -> dict:
    """Fine-tune, evaluate and write RUN_DIR; resume from checkpoints/ if unfinished."""
    task, method = cfg.task, cfg.method
    if task.type not in TASKS:
        raise InputError(f"task.type must be one of {', '.join(TASKS)}, not {task.type!r}")
    if method.distill_from:
        if task.type == "embedding" or cfg.train.class_weights:
            raise InputError("method.distill_from is for classification and NER, without "
                             "train.class_weights")
        check_distill(DistillConfig(method.distill_from, method.distill_alpha,
                                    method.distill_temperature))
    if task.type == "embedding":
        from tfllm.embeddings.train import finetune_embedder

        return finetune_embedder(cfg, init, out, quiet)
    tagging = task.type == "token_classification"
    if tagging and (cfg.train.class_weights or cfg.train.label_smoothing):
        raise InputError("train.class_weights and train.label_smoothing are for classification")
    if tagging and (cfg.augment.copies or cfg.augment.back_translate):
        raise InputError("augment is for classification (word edits would misalign the tags)")
    if not task.train:
        raise InputError("no training file: set task.train or pass --train")
    out = Path(out)
    if (out / "metrics.json").is_file():
        raise InputError(f"{out} already holds a finished run (metrics.json); choose another --out")

    # 1. Data: read, check labels, augment the training split only.
    train, evaluation, test, names = task_data(cfg)
    index = {name: i for i, name in enumerate(names)}

    # 2. Model: checkpoint (its tokenizer comes with it) + head + method switches.
    checkpoint, tokenizer = load_start(cfg, init, out)
    backbone = checkpoint.backbone
    if method.name == "adapter":
        if method.adapter_size < 1:
            raise InputError(f"method.adapter_size must be >= 1, got {method.adapter_size}")
        backbone = with_adapters(backbone, method.adapter_size)
    if tagging:
        model = build_token_classifier(backbone, len(names), cfg.model.dropout)
    else:
        model = build_classifier(backbone, len(names), cfg.model.dropout)
    apply_method(method, backbone)

    # 3. Features and losses.
    x_train, y_train = encode_examples(tokenizer, train, task, index)
    x_eval, y_eval = encode_examples(tokenizer, evaluation, task, index)
    if tagging:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)
        compiled_metrics, target, monitor = [], (y_train, y_eval), "val_entity_f1"
    else:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True,
                                                    label_smoothing=cfg.train.label_smoothing)
        compiled_metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        one_hot = np.eye(len(names), dtype="float32")
        target, monitor = (one_hot[y_train], one_hot[y_eval]), "val_accuracy"
    distill = None
    if method.distill_from:
        distill = Teacher(DistillConfig(method.distill_from, method.distill_alpha,
                                        method.distill_temperature), names,
                          Path(checkpoint.tokenizer_dir) / "vocab.txt", tagging, task.max_len,
                          task.truncation, cfg.train.label_smoothing)
        teacher_train = distill.teacher_logits(train, x_train, out / "checkpoints" /
                                               "teacher_logits.npy")
        teacher_eval = distill.teacher_logits(evaluation, x_eval)
        student_eval = distill.logits(model, evaluation, x_eval, tokenizer)
        kd_before = distill.kd_loss(student_eval, teacher_eval, y_eval)
        target = (distill.targets(target[0], teacher_train),
                  distill.targets(target[1], teacher_eval))
        loss = distill.loss
        if not tagging:
            compiled_metrics = [first_columns_accuracy(len(names))]
    train_ds = batched(x_train, target[0], cfg.train.batch_size, True, cfg.train.seed,
                       by_length=cfg.train.bucket_by_length)
    eval_ds = batched(x_eval, target[1], 64, False, 0)

    # 4. Fit.
    optimizer = scheduled_optimizer(cfg.train, len(train))
    trainer = model
    if method.fgm_epsilon > 0:
        trainer = FGMTrainer(model, backbone.token_embedding.embeddings, method.fgm_epsilon)
        trainer(next(iter(eval_ds))[0])  # builds it (BackupAndRestore needs a built model)
    trainer.compile(optimizer=optimizer, loss=loss, metrics=compiled_metrics)
    callbacks = []
    if tagging:
        callbacks.append(EvalMetric("entity_f1", lambda: score_examples(
            model, tokenizer, evaluation, names, task, quiet=True)["entity_f1"]))
    callbacks += [keras.callbacks.BackupAndRestore(str(out / "checkpoints")),
                  keras.callbacks.TensorBoard(str(out / "logs"))]
    if cfg.train.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode="max", patience=cfg.train.early_stopping_patience,
            restore_best_weights=True))
    class_weight = None
    if cfg.train.class_weights:
        counts = np.bincount(y_train, minlength=len(names))
        class_weight = {i: len(y_train) / (len(names) * max(c, 1)) for i, c in enumerate(counts)}
    started = time.perf_counter()
    history = trainer.fit(train_ds, validation_data=eval_ds, epochs=cfg.train.epochs,
                          callbacks=callbacks, class_weight=class_weight,
                          verbose=0 if quiet else 1)
    train_seconds = time.perf_counter() - started

    # 5. Evaluate and write the RUN_DIR.
    metrics = score_examples(model, tokenizer, evaluation, names, task, quiet=quiet,
                             progress=not quiet)
    metrics.update(_run_facts(cfg, init, checkpoint.kind, len(train), len(evaluation),
                              history.history, train_seconds, model))
    if distill:
        metrics["distillation"] = {
            "teacher": method.distill_from, "alpha": method.distill_alpha,
            "temperature": method.distill_temperature,
            "kd_loss_eval_before": round(kd_before, 6),
            "kd_loss_eval_after": round(distill.kd_loss(distill.logits(
                model, evaluation, x_eval, tokenizer), teacher_eval, y_eval), 6)}
    if test:
        if not quiet:
            print(f"scoring {len(test):,} test examples")
        metrics["test"] = score_examples(model, tokenizer, test, names, task, quiet=True,
                                         progress=not quiet)
    write_run(out, model, backbone, Path(checkpoint.tokenizer_dir), cfg, metrics, names,
              history.history)
    if not quiet:
        key = "entity_f1" if tagging else "accuracy"
        print(f"finetune -> {out}: {key} {metrics[key]:.4f}"
              + (f", test {key} {metrics['test'][key]:.4f}" if test else ""))
    return metrics
