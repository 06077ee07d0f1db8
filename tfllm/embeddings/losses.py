"""Losses for training sentence embeddings on pairs. The model's output for a batch of pairs
is the two sides' unit embeddings side by side, [batch, 2 * hidden]; the target is the pair's
gold score (ignored by the in-batch-negatives loss).

- `cosent`: CoSENT (Su, 2022), the loss sentence-transformers recommends for scored pairs:
  log(1 + sum over pairs (i, j) with gold_i > gold_j of exp(scale * (cos_j - cos_i))); only
  the ranking of the cosines matters, as in the Spearman the task is scored with.
- `cosine`: mean squared error between the cosine and the gold score / `score_max`
  (sentence-transformers' CosineSimilarityLoss).
- `mnrl`: multiple-negatives ranking (in-batch negatives): each first text must pick its
  own second text among the batch's, cross-entropy over scale * cosines.

Hand-written: Keras has none of these pair losses (keras-hub neither).

Example:

>>> import numpy as np
>>> from tfllm.embeddings.losses import pair_loss
>>> a = np.eye(2, dtype="float32")
>>> right = np.concatenate([a, a], axis=1)            # each pair identical
>>> wrong = np.concatenate([a, a[::-1]], axis=1)      # each pair orthogonal
>>> gold = np.array([5.0, 0.0], dtype="float32")
>>> loss = pair_loss("mnrl")
>>> float(loss(gold, right)) < float(loss(gold, wrong))
True
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfllm.errors import InputError

LOSSES = ("cosent", "cosine", "mnrl")


def _sides(y_pred: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    first, second = tf.split(tf.cast(y_pred, tf.float32), 2, axis=-1)
    return tf.math.l2_normalize(first, -1), tf.math.l2_normalize(second, -1)


def pair_loss(name: str, scale: float = 20.0, score_max: float = 5.0) -> Callable:
    """The loss `name` as a Keras loss function (y_true: gold scores [batch])."""
    if name not in LOSSES:
        raise InputError(f"task.loss must be one of {', '.join(LOSSES)}, not {name!r}")

    def cosent(y_true, y_pred):
        first, second = _sides(y_pred)
        scores = scale * tf.reduce_sum(first * second, -1)
        gold = tf.reshape(tf.cast(y_true, tf.float32), [-1])
        # [i, j] = s_i - s_j, kept only where gold_i < gold_j (s_i should be the lower one)
        diff = scores[:, None] - scores[None, :]
        diff = tf.where(gold[:, None] < gold[None, :], diff, tf.fill(tf.shape(diff), -1e12))
        return tf.reduce_logsumexp(tf.concat([[0.0], tf.reshape(diff, [-1])], 0))

    def cosine(y_true, y_pred):
        first, second = _sides(y_pred)
        gold = tf.reshape(tf.cast(y_true, tf.float32), [-1]) / score_max
        return tf.reduce_mean(tf.square(tf.reduce_sum(first * second, -1) - gold))

    def mnrl(y_true, y_pred):
        first, second = _sides(y_pred)
        logits = scale * tf.matmul(first, second, transpose_b=True)
        labels = tf.range(tf.shape(logits)[0])
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

    return {"cosent": cosent, "cosine": cosine, "mnrl": mnrl}[name]
