"""Knowledge distillation: a student fine-tunes on a teacher run's softened logits mixed with
the hard labels (Hinton et al., 2015):

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross-entropy(labels, student)

The teacher's logits over the training set are computed once, before `fit`, and travel
with the labels as one target array (so shuffling and length buckets keep them aligned);
they are cached beside the run's resume checkpoints, so a resumed run does not recompute
them. For NER both terms count only the scored positions (each word's first sub-token).

Example:

>>> import numpy as np
>>> teacher = np.array([[2.0, -1.0], [0.5, 0.3]], "float32")
>>> loss = DistillationLoss(num_classes=2, temperature=2.0, alpha=1.0)
>>> target = np.concatenate([np.eye(2, dtype="float32")[[0, 1]], teacher], axis=1)
>>> float(loss(target, teacher)) < 1e-6  # a student equal to its teacher: no KD loss
True
>>> float(loss(target, teacher[:, ::-1].copy())) > 0.1
True
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from tfllm.atomic import atomic_write_bytes
from tfllm.errors import InputError
from tfllm.finetune.tagging import IGNORE


@dataclass
class DistillConfig:
    """`distill_from`: a fine-tuned RUN_DIR with the same labels; `alpha`: weight of the soft
    term; `temperature`: softening of both distributions."""

    distill_from: str | None = None
    alpha: float = 0.5
    temperature: float = 2.0


def check(cfg: DistillConfig) -> None:
    if not 0.0 <= cfg.alpha <= 1.0:
        raise InputError(f"method.distill_alpha must be in [0, 1], got {cfg.alpha}")
    if cfg.temperature <= 0:
        raise InputError(f"method.distill_temperature must be > 0, got {cfg.temperature}")
    run = Path(cfg.distill_from or "")
    if not (run / "model.keras").is_file() or not (run / "labels.json").is_file():
        raise InputError(f"method.distill_from={cfg.distill_from}: not a fine-tuned RUN_DIR "
                         "(model.keras and labels.json expected)")


class DistillationLoss(keras.losses.Loss):
    """Soft + hard loss. Targets: classification ``[one-hot labels | teacher logits]``
    (``[B, 2C]``); tagging ``[label id | teacher logits]`` per position (``[B, L, 1 + C]``,
    label `IGNORE` where not scored). `teacher_classes`: a teacher over only the first K of
    the student's C classes (a head that has grown since, as in continual learning): the
    target is ``[one-hot | K teacher logits]`` and the soft term compares those K columns."""

    def __init__(self, num_classes: int, temperature: float = 2.0, alpha: float = 0.5,
                 tagging: bool = False, label_smoothing: float = 0.0,
                 name: str = "distillation", teacher_classes: int | None = None) -> None:
        super().__init__(name=name)
        self.num_classes, self.temperature, self.alpha = num_classes, temperature, alpha
        self.tagging, self.label_smoothing = tagging, label_smoothing
        self.teacher_classes = teacher_classes or num_classes

    def soft(self, teacher, student):
        """Per-row KL(teacher_T || student_T) * T^2 (the T^2 keeps gradients comparable)."""
        t = self.temperature
        target = ops.softmax(teacher / t, axis=-1)
        log_ratio = ops.log(ops.maximum(target, 1e-12)) - ops.log_softmax(student / t, axis=-1)
        return ops.sum(target * log_ratio, axis=-1) * t * t

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        if not self.tagging:
            labels, teacher = y_true[..., :self.num_classes], y_true[..., self.num_classes:]
            hard = keras.losses.categorical_crossentropy(
                labels, y_pred, from_logits=True, label_smoothing=self.label_smoothing)
            soft = self.soft(teacher, y_pred[..., :self.teacher_classes])
            return self.alpha * soft + (1 - self.alpha) * hard
        labels, teacher = ops.cast(y_true[..., 0], "int32"), y_true[..., 1:]
        scored = ops.cast(ops.not_equal(labels, IGNORE), "float32")
        hard = keras.losses.sparse_categorical_crossentropy(
            ops.maximum(labels, 0), y_pred, from_logits=True)
        per_token = self.alpha * self.soft(teacher, y_pred) + (1 - self.alpha) * hard
        mean = ops.sum(per_token * scored) / ops.maximum(ops.sum(scored), 1.0)
        # The mean over scored positions, repeated per row: Keras averages rows, and the
        # padding positions must not dilute it.
        return ops.ones_like(per_token[:, 0]) * mean


def first_columns_accuracy(num_classes: int) -> keras.metrics.Metric:
    """Classification accuracy against the one-hot part of a distillation target."""

    def accuracy(y_true, y_pred):
        return ops.cast(ops.equal(ops.argmax(y_true[..., :num_classes], axis=-1),
                                  ops.argmax(y_pred, axis=-1)), "float32")

    return keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


class Teacher:
    """The teacher run's side of a fine-tune with `method.distill_from`: its logits (over the
    training set once, cached), the targets that carry them, the loss that reads them, and the
    KD loss on the eval split. Its labels must be the student's, in order; a token classifier
    teacher also needs the student's vocabulary (positions must align), a classifier teacher
    with another vocabulary re-tokenizes the texts with its own. Used by
    `tfllm.finetune.train.finetune`; the module docstring runs the loss."""

    def __init__(self, settings: DistillConfig, names: list[str], student_vocab: Path,
                 tagging: bool, max_len: int, truncation: str = "head",
                 label_smoothing: float = 0.0) -> None:
        from tfllm_serving.wordpiece import load_tokenizer

        from tfllm.models.run_dir import load_run_model

        check(settings)
        run = Path(settings.distill_from)
        teacher_names = json.loads((run / "labels.json").read_text())
        if teacher_names != names:
            raise InputError(f"method.distill_from={run}: its labels {teacher_names} differ "
                             f"from the training data's {names}")
        same_vocab = (run / "tokenizer" / "vocab.txt").read_text() == student_vocab.read_text()
        if tagging and not same_vocab:
            raise InputError(f"method.distill_from={run}: a token classifier teacher needs the "
                             "student's vocabulary (positions must align)")
        self.model, self.tokenizer = load_run_model(run), load_tokenizer(run / "tokenizer")
        self.tagging = tagging
        self.max_len, self.truncation = max_len, truncation
        self.loss = DistillationLoss(len(names), settings.temperature, settings.alpha, tagging,
                                     label_smoothing)

    def logits(self, model: Any, examples: list, features: dict, tokenizer: Any) -> np.ndarray:
        """`model`'s logits (teacher or student) for examples / their student features."""
        from tfllm.finetune.features import predict_logits, predict_token_logits

        if self.tagging:
            return predict_token_logits(model, features)
        return predict_logits(model, tokenizer, examples, self.max_len,
                              truncation=self.truncation)

    def teacher_logits(self, examples: list, features: dict, cache: Path | None = None
                       ) -> np.ndarray:
        compute = lambda: self.logits(self.model, examples, features,  # noqa: E731
                                      self.tokenizer)
        return cached_teacher_logits(cache, compute) if cache else compute()

    def targets(self, labels: np.ndarray, teacher_logits: np.ndarray) -> np.ndarray:
        return distillation_targets(labels, teacher_logits, self.tagging)

    def kd_loss(self, student: np.ndarray, teacher: np.ndarray, labels: np.ndarray) -> float:
        """Mean soft term over eval rows (NER: over scored positions)."""
        per_row = np.asarray(self.loss.soft(teacher, student.astype("float32")))
        if self.tagging:
            return float(per_row[labels != IGNORE].mean())
        return float(per_row.mean())


def cached_teacher_logits(cache: Path, compute) -> np.ndarray:
    """`compute()` once; later calls (a resumed run) read `cache`."""
    if cache.is_file():
        return np.load(cache)
    logits = np.asarray(compute(), np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, logits)
    atomic_write_bytes(cache, buffer.getvalue())
    return logits


def distillation_targets(labels: np.ndarray, teacher_logits: np.ndarray,
                         tagging: bool) -> np.ndarray:
    """The target array `DistillationLoss` reads: labels (one-hot rows, or tag ids) + logits."""
    if tagging:
        return np.concatenate([labels[..., None].astype("float32"), teacher_logits], axis=-1)
    return np.concatenate([labels.astype("float32"), teacher_logits], axis=-1)
