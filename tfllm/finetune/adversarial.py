"""FGM adversarial training (Miyato et al., 2017) as a Keras `train_step`.

Each step: gradients of the clean loss; move the word-embedding matrix by
epsilon * g / ||g|| (g = its gradient); add the gradients of the loss at that point;
move the embeddings back; apply the sum. Keras has no adversarial training built in,
so this is the one custom step; `fit`, callbacks and metrics work as usual and the
wrapped model is what gets saved.

Example:

>>> import keras, numpy as np
>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> from tfllm.finetune.train import build_classifier
>>> from tfllm.finetune.adversarial import FGMTrainer
>>> backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2,
...                                          intermediate_dim=64), vocab_size=100)
>>> model = build_classifier(backbone, num_classes=2, dropout=0.1)
>>> trainer = FGMTrainer(model, backbone.token_embedding.embeddings, epsilon=1.0)
>>> trainer.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
>>> x = {"token_ids": np.ones((4, 8), "int32"), "segment_ids": np.zeros((4, 8), "int32"),
...      "padding_mask": np.ones((4, 8), "int32")}
>>> history = trainer.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
>>> sorted(history.history)
['loss']
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


class FGMTrainer(keras.Model):
    """Trains `model` with FGM on the `embeddings` variable (perturbation norm `epsilon`)."""

    def __init__(self, model: Any, embeddings: Any, epsilon: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.embeddings = embeddings
        self.epsilon = epsilon

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def _loss_and_gradients(self, x, y, sample_weight, variables):
        with tf.GradientTape() as tape:
            tape.watch(self.embeddings.value)
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                     training=True)
        return loss, y_pred, tape.gradient(loss, variables)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        trainable = list(self.trainable_variables)
        # The embeddings may be frozen (LoRA, freeze) and still need their gradient.
        position = [i for i, v in enumerate(trainable) if v is self.embeddings]
        variables = trainable if position else trainable + [self.embeddings.value]
        loss, y_pred, grads = self._loss_and_gradients(x, y, sample_weight, variables)
        g = tf.convert_to_tensor(grads[position[0] if position else -1])
        original = tf.identity(self.embeddings.value)  # restore exactly, not by subtracting
        self.embeddings.assign_add(self.epsilon * g / (tf.norm(g) + 1e-12))
        _, _, adversarial = self._loss_and_gradients(x, y, sample_weight, trainable)
        self.embeddings.assign(original)
        total = [a if b is None else (b if a is None else tf.convert_to_tensor(a)
                                      + tf.convert_to_tensor(b))
                 for a, b in zip(grads[:len(trainable)], adversarial, strict=True)]
        self.optimizer.apply_gradients(zip(total, trainable, strict=True))
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
