"""Fused GELU and dropout: the same maths as keras-hub's, in place inside a BertBackbone."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_hub.src.utils.keras_utils import gelu_approximate as keras_hub_gelu

from tfllm.models.backbone import BackboneConfig, build_backbone
from tfllm.models.fused_elementwise import FusedDropout, fuse_elementwise, gelu_approximate


def _value_and_grad(fn, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        weights = tf.reshape(tf.range(tf.size(y), dtype=tf.float32), tf.shape(y))
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights / tf.cast(tf.size(y), tf.float32))
    return tf.cast(y, tf.float32).numpy(), tf.cast(tape.gradient(loss, x), tf.float32).numpy()


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("bfloat16", 0.02)])
def test_fused_gelu_matches_keras_hub_gelu_and_its_gradient(dtype, atol):
    x = tf.cast(tf.linspace(-6.0, 6.0, 4001), dtype)
    y, dx = _value_and_grad(tf.function(gelu_approximate), x)
    y_ref, dx_ref = _value_and_grad(keras_hub_gelu, x)
    np.testing.assert_allclose(y, y_ref, atol=atol, rtol=atol)
    np.testing.assert_allclose(dx, dx_ref, atol=atol, rtol=atol)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_fused_dropout_drops_the_rate_keeps_the_mean_and_backpropagates_its_mask(rate):
    layer = FusedDropout(rate, seed=3)
    x = tf.ones((64, 4, 33, 17))  # an odd size: two 16-bit draws per uint32 must still fit
    y, dx = _value_and_grad(lambda t: layer(t, training=True), x)
    dropped = (y == 0).mean()
    # 4 standard deviations of a binomial over 143,616 draws
    assert abs(dropped - rate) < 4 * np.sqrt(rate * (1 - rate) / y.size)
    threshold = round(rate * 65536)  # keep probability and scale exact to 1/65536
    assert set(np.unique(y)) == {0.0, np.float32(65536 / (65536 - threshold))}
    assert abs(y.mean() - 1.0) < 0.01
    weights = np.arange(y.size, dtype=np.float32).reshape(y.shape) / y.size
    np.testing.assert_allclose(dx, np.where(y == 0, 0.0, weights * y), rtol=0.01)


def test_fused_dropout_draws_a_new_mask_per_call_from_its_seed():
    x = tf.ones((1000,))
    first, second = FusedDropout(0.3, seed=7), FusedDropout(0.3, seed=7)
    a, b = first(x, training=True).numpy(), first(x, training=True).numpy()
    assert (a != b).any()
    np.testing.assert_array_equal(second(x, training=True).numpy(), a)
    np.testing.assert_array_equal(first(x, training=False).numpy(), x.numpy())


def test_fusing_a_backbone_swaps_its_layers_and_keeps_inference_and_config():
    backbone = build_backbone(BackboneConfig(num_layers=2, hidden_dim=32, num_heads=2,
                                             intermediate_dim=64), vocab_size=300)
    rng = np.random.default_rng(0)
    inputs = {"token_ids": rng.integers(1, 300, (2, 24)).astype("int32"),
              "segment_ids": np.zeros((2, 24), "int32"),
              "padding_mask": np.ones((2, 24), "int32")}
    before = backbone(inputs)["sequence_output"].numpy()
    config = backbone.get_config()
    dropouts = [layer for layer in backbone._flatten_layers()
                if isinstance(layer, keras.layers.Dropout)]

    fuse_elementwise(backbone)

    assert dropouts and all(type(layer) is FusedDropout for layer in dropouts)
    for layer in backbone.transformer_layers:
        assert layer._feedforward_intermediate_dense.activation is gelu_approximate
    np.testing.assert_allclose(backbone(inputs)["sequence_output"].numpy(), before, atol=1e-5)
    assert backbone.get_config() == config
    trained = backbone(inputs, training=True)["sequence_output"].numpy()
    assert np.isfinite(trained).all() and not np.allclose(trained, before, atol=1e-3)


@pytest.mark.parametrize("rate", [1.0, 0.999999])
def test_fused_dropout_near_rate_one_drops_everything_like_keras(rate):
    # round(rate * 65536) == 65536 does not fit the 16-bit threshold: Keras' path takes it.
    y = FusedDropout(rate, seed=1)(tf.ones((1000,)), training=True).numpy()
    np.testing.assert_array_equal(
        y, keras.layers.Dropout(rate, seed=1)(tf.ones((1000,)), training=True).numpy())
    assert (y == 0).mean() > 0.99
