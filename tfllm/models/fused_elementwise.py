"""XLA-fused GELU and dropout for training keras-hub's `TransformerEncoder` on TensorFlow.

Under `mixed_bfloat16` on CPU the matmuls run on oneDNN, and what is left is element-wise:
keras-hub's tanh GELU is 8 separate ops forward and more backward, and Keras `Dropout` draws
a float uniform per element then multiplies twice; TensorFlow runs each as its own pass over
memory, and bf16 element-wise kernels are scalar. Here each becomes one XLA-compiled kernel
(forward and a hand-written backward through `tf.custom_gradient`), and dropout draws 16
random bits per element instead of 32 (half the Philox work). The maths is unchanged: the
same tanh GELU, and dropout keeps each element with probability 1 - rate (to 1/65536) and
scales by the exact inverse. Only `tfllm pretrain` swaps them in (its held-out evaluation
runs the fused GELU too); saved models reload with keras-hub's own layers.

Example:

>>> import numpy as np
>>> from tfllm.models.fused_elementwise import FusedDropout, gelu_approximate
>>> x = np.linspace(-3, 3, 8).astype("float32")
>>> bool(np.allclose(gelu_approximate(x), keras.activations.gelu(x, approximate=True), atol=1e-6))
True
>>> y = FusedDropout(0.5, seed=1)(np.ones((1000,), "float32"), training=True).numpy()
>>> 0.4 < (y == 0).mean() < 0.6 and set(np.unique(y)) == {0.0, 2.0}
True
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

_GELU_C = math.sqrt(2 / math.pi)
_BITS = 65536  # dropout compares 16-bit random integers against rate * _BITS


def _gelu_tanh(x32: tf.Tensor) -> tf.Tensor:
    return tf.tanh(_GELU_C * (x32 + 0.044715 * x32 * x32 * x32))


@tf.function(jit_compile=True)
def _gelu_forward(x: tf.Tensor) -> tf.Tensor:
    x32 = tf.cast(x, tf.float32)
    return tf.cast(0.5 * x32 * (1 + _gelu_tanh(x32)), x.dtype)


@tf.function(jit_compile=True)
def _gelu_backward(x: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    # Recomputes tanh rather than keeping it from the forward: one fewer tensor held in memory.
    x32 = tf.cast(x, tf.float32)
    t = _gelu_tanh(x32)
    slope = 0.5 * (1 + t) + 0.5 * x32 * (1 - t * t) * _GELU_C * (1 + 3 * 0.044715 * x32 * x32)
    return tf.cast(tf.cast(dy, tf.float32) * slope, x.dtype)


@tf.custom_gradient
def gelu_approximate(x):
    """keras-hub's `gelu_approximate` (tanh GELU) as one fused kernel each way."""
    x = tf.convert_to_tensor(x)
    return _gelu_forward(x), lambda dy: _gelu_backward(x, dy)


@tf.function(jit_compile=True)
def _dropout_apply(x: tf.Tensor, bits: tf.Tensor, threshold: int) -> tf.Tensor:
    # Two 16-bit draws per uint32; keep where the draw >= threshold, scale by the exact inverse.
    draws = tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[: tf.size(x)]
    keep = tf.reshape(draws, tf.shape(x)) >= tf.cast(threshold, tf.uint16)
    scale = tf.cast(_BITS / (_BITS - threshold), x.dtype)
    return tf.where(keep, x * scale, tf.zeros_like(x))


def _dropout(x: tf.Tensor, seed: tf.Tensor, rate: float) -> tf.Tensor:
    threshold = round(rate * _BITS)
    bits = tf.random.stateless_uniform([(tf.size(x) + 1) // 2], seed, minval=None,
                                       maxval=None, dtype=tf.uint32)

    @tf.custom_gradient
    def apply(x):
        return _dropout_apply(x, bits, threshold), lambda dy: _dropout_apply(dy, bits, threshold)

    return apply(x)


class FusedDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` with 16-bit random draws and one fused kernel each way.

    Same arguments, seeds and serialized config as `keras.layers.Dropout` (a `noise_shape`,
    or a rate too close to 1 for 16 bits, falls back to it); `fuse_elementwise` turns
    keras-hub's dropout layers into this.

    Example:

    >>> layer = FusedDropout(0.1, seed=0)
    >>> x = tf.ones((4, 8))
    >>> bool(tf.reduce_all(layer(x) == x))  # inference is the identity
    True
    """

    def call(self, inputs, training=False):
        # A rate within 1/131072 of 1 rounds to a threshold that 16 bits cannot hold.
        if (not training or self.rate == 0 or round(self.rate * _BITS) >= _BITS
                or self.noise_shape is not None):
            return super().call(inputs, training=training)
        seed = self.seed_generator.next()
        # Keras' TF backend keeps seeds int32 so the op also compiles under XLA.
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
        return _dropout(inputs, seed, self.rate)


def fuse_elementwise(backbone: keras.Model) -> keras.Model:
    """Turn a keras-hub backbone's dropout layers into `FusedDropout` and the tanh GELU of its
    `TransformerEncoder` feed-forward layers into `gelu_approximate`, in place.

    Training-only: the serialized backbone (its config, a preset, `model.keras`) is unchanged,
    so a reloaded model is plain keras-hub again. keras-hub builds these layers inside
    `BertBackbone` with no hook to choose them, hence the in-place swap.
    """
    from keras_hub.layers import TransformerEncoder
    from keras_hub.src.utils.keras_utils import gelu_approximate as keras_hub_gelu

    for layer in backbone._flatten_layers(include_self=False):
        if type(layer) is keras.layers.Dropout:
            layer.__class__ = FusedDropout
        elif isinstance(layer, TransformerEncoder):
            dense = getattr(layer, "_feedforward_intermediate_dense", None)
            if dense is not None and dense.activation is keras_hub_gelu:
                dense.activation = gelu_approximate
    return backbone
