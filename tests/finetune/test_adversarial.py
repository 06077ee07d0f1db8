"""FGM's train step against the textbook dense computation, on one batch."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("frozen_embeddings", [False, True])
def test_one_fgm_step_applies_clean_plus_adversarial_gradients_and_restores_the_table(
        frozen_embeddings):
    import keras
    import tensorflow as tf

    from tfllm.finetune.adversarial import FGMTrainer
    from tfllm.finetune.train import build_classifier
    from tfllm.models.backbone import BackboneConfig, build_backbone

    keras.utils.set_random_seed(3)
    backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=16, num_heads=2,
                                             intermediate_dim=32, dropout=0.0), vocab_size=50)
    model = build_classifier(backbone, num_classes=2, dropout=0.0)
    table = backbone.token_embedding.embeddings
    if frozen_embeddings:
        backbone.token_embedding.trainable = False
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 20, (4, 6)).astype("int32")  # rows 20..49 are never looked up
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    y = np.eye(2, dtype="float32")[[0, 1, 1, 0]]
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
    epsilon = 0.5

    # The reference: dense gradient of the whole table, whole-table perturbation.
    trainable = list(model.trainable_variables)
    before = [keras.ops.convert_to_numpy(v) for v in trainable]
    table_before = keras.ops.convert_to_numpy(table)

    def grads_at(emb: np.ndarray) -> tuple[list, np.ndarray]:
        table.assign(emb)
        with tf.GradientTape() as tape:
            tape.watch(table.value)
            loss = loss_fn(y, model(x, training=True))
        g = tape.gradient(loss, trainable + [table.value])
        table.assign(table_before)
        return [tf.convert_to_tensor(t).numpy() for t in g[:-1]], tf.convert_to_tensor(g[-1]).numpy()

    clean, g_table = grads_at(table_before)
    adversarial, _ = grads_at(table_before + epsilon * g_table / np.linalg.norm(g_table))
    expected = [w - (a + b) for w, a, b in zip(before, clean, adversarial, strict=True)]

    trainer = FGMTrainer(model, table, epsilon=epsilon)
    trainer.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss=loss_fn)
    trainer.train_on_batch(x, y)

    for variable, want in zip(trainable, expected, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), want, atol=1e-5,
                                   err_msg=variable.path)
    if frozen_embeddings:  # the perturbation was taken back exactly
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(table), table_before)
    else:  # rows never looked up got no gradient and no leftover perturbation
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(table)[20:], table_before[20:])
