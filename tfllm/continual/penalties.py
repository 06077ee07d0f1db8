"""Keeping weights near where earlier tasks left them: L2 and EWC penalties.

Both add lambda/2 * sum_i F_i (theta_i - theta*_i)^2 to the loss, theta* = the weights at the
start of the current task. `l2sp` weighs every weight alike (F = 1); `ewc` weighs each by
its diagonal Fisher information on the earlier tasks (Kirkpatrick et al. 2017; summed over
tasks, "online" EWC), normalised to mean 1 so that one lambda means the same for both.
Keras has no such regularizer across tasks (a kernel regularizer pulls towards 0), so the
wrapper below adds it in `compute_loss`; fit, callbacks and metrics work as usual and the
wrapped model is what gets saved.

Example:

>>> import keras, numpy as np
>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> from tfllm.finetune.train import build_classifier
>>> from tfllm.continual.penalties import Anchored, fisher_diagonal
>>> backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2,
...                                          intermediate_dim=64), vocab_size=100)
>>> model = build_classifier(backbone, num_classes=2, dropout=0.0)
>>> x = {"token_ids": np.ones((4, 8), "int32"), "segment_ids": np.zeros((4, 8), "int32"),
...      "padding_mask": np.ones((4, 8), "int32")}
>>> fisher = fisher_diagonal(model, backbone.trainable_weights, x, seed=0)
>>> trainer = Anchored(model, backbone.trainable_weights, fisher, strength=1.0)
>>> trainer.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
>>> float(trainer.penalty())
0.0
>>> _ = trainer.fit(x, np.array([0, 1, 0, 1]), epochs=2, verbose=0)
>>> float(trainer.penalty()) > 0
True
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


class Anchored(keras.Model):
    """Trains `model` with strength/2 * sum F (w - w_start)^2 over `variables` (F: one
    array per variable, or None for all ones)."""

    def __init__(self, model: Any, variables: list, importance: list[np.ndarray] | None,
                 strength: float, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.strength = float(strength)
        self.anchored = list(variables)
        self.anchors = [keras.Variable(np.asarray(v), trainable=False, name="anchor")
                        for v in self.anchored]
        self.importance = None if importance is None else [
            keras.Variable(f.astype("float32"), trainable=False, name="fisher")
            for f in importance]

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def penalty(self):
        total = 0.0
        for i, (variable, anchor) in enumerate(zip(self.anchored, self.anchors, strict=True)):
            squared = ops.square(variable.value - anchor.value)
            if self.importance is not None:
                squared = squared * self.importance[i].value
            total = total + ops.sum(squared)
        return total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                    training=training)
        return loss + 0.5 * self.strength * self.penalty()


def fisher_diagonal(model: Any, variables: list, x: dict[str, np.ndarray],
                    seed: int = 0) -> list[np.ndarray]:
    """Diagonal Fisher information of `model`'s log-likelihood for `variables`, one row of
    `x` at a time, labels drawn from the model's own prediction (the true Fisher, not the
    empirical one); each row trimmed to its length. Raw (not normalised) sums."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    totals = [np.zeros(v.shape, "float32") for v in variables]

    @tf.function(reduce_retracing=True)
    def squared_gradients(row, label):
        with tf.GradientTape() as tape:
            logits = model(row, training=False)
            log_p = tf.nn.log_softmax(logits)[0, label]
        return [tf.square(g) for g in tape.gradient(log_p, variables)]

    for i in range(len(x["token_ids"])):
        width = max(1, int(x["padding_mask"][i].sum()))
        row = {k: v[i:i + 1, :width] for k, v in x.items()}
        probs = ops.convert_to_numpy(ops.softmax(model(row, training=False)))[0]
        label = int(rng.choice(len(probs), p=probs / probs.sum()))
        for total, g in zip(totals, squared_gradients(row, label), strict=True):
            total += g.numpy()
    return totals


def normalised(fisher: list[np.ndarray]) -> list[np.ndarray]:
    """Fisher arrays scaled to mean 1 over every entry (so lambda reads like plain L2's)."""
    mean = sum(float(f.sum()) for f in fisher) / sum(f.size for f in fisher)
    return [f / max(mean, 1e-30) for f in fisher]
