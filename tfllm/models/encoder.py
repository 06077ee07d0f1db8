"""`BertBackbone` with what keras-hub's cannot hold: attention heads of another size than
hidden / heads (structured pruning), and bottleneck adapters (parameter-efficient tuning).

keras-hub sizes an attention head as `hidden_dim / num_heads`, so a BertBackbone cannot hold
8 heads of 32 with a hidden size of 384 (what pruning 4 of MiniLM's 12 heads leaves); nor has
its encoder a place for adapters (Houlsby et al. 2019: a small down-projection, GELU and
up-projection after the attention block and after the feed-forward block of every layer,
added to their output before the residual sum and LayerNorm). `EncoderLayer` is keras-hub's
`TransformerEncoder` with both options, and `BertVariantBackbone` is `BertBackbone` built
from it. Pruning only feed-forward neurons or whole layers needs neither: that result is an
ordinary `BertBackbone`.

All are registered Keras objects (package `tfllm`), so `model.keras` and the `backbone/`
preset of such a run load with `keras.saving.load_model` / `Backbone.from_preset` once this
module is imported (tfllm's loaders import it).

Example:

>>> import numpy as np
>>> from tfllm.models.encoder import BertVariantBackbone
>>> backbone = BertVariantBackbone(vocabulary_size=100, num_layers=1, num_heads=2, head_dim=8,
...                                hidden_dim=32, intermediate_dim=64, adapter_size=4)
>>> attention = backbone.transformer_layers[0]._self_attention_layer
>>> tuple(attention._query_dense.kernel.shape)
(32, 2, 8)
>>> x = {"token_ids": np.ones((1, 5), "int32"), "segment_ids": np.zeros((1, 5), "int32"),
...      "padding_mask": np.ones((1, 5), "int32")}
>>> tuple(backbone(x)["sequence_output"].shape)
(1, 5, 32)
"""

from __future__ import annotations

import keras
import keras_hub
from keras_hub.src.layers.modeling.transformer_encoder import TransformerEncoder
from keras_hub.src.models.bert.bert_backbone import bert_kernel_initializer
from keras_hub.src.utils.keras_utils import clone_initializer, gelu_approximate


def projections(layer: TransformerEncoder) -> tuple:
    """A keras-hub encoder layer's dense projections: query, key, value, attention output
    (kernels [hidden, heads, head_dim] x3, [heads, head_dim, hidden]), feed-forward in and
    out."""
    attention = layer._self_attention_layer
    return (attention._query_dense, attention._key_dense, attention._value_dense,
            attention._output_dense, layer._feedforward_intermediate_dense,
            layer._feedforward_output_dense)


@keras.saving.register_keras_serializable(package="tfllm")
class Adapter(keras.layers.Layer):
    """Dropout, then `x + up(gelu(down(x)))`; `up` starts at zero, so a new adapter passes
    its input through unchanged."""

    def __init__(self, size: int, rate: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size, self.rate = size, rate
        self.dropout = keras.layers.Dropout(rate, dtype=self.dtype_policy)

    def build(self, inputs_shape) -> None:
        hidden = inputs_shape[-1]
        self.down = keras.layers.Dense(
            self.size, activation=gelu_approximate, name="down", dtype=self.dtype_policy,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.down.build(inputs_shape)
        self.up = keras.layers.Dense(hidden, kernel_initializer="zeros", name="up",
                                     dtype=self.dtype_policy)
        self.up.build((*inputs_shape[:-1], self.size))

    def call(self, x, training=None):
        x = self.dropout(x, training=training)
        return x + self.up(self.down(x))

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "rate": self.rate}


@keras.saving.register_keras_serializable(package="tfllm")
class EncoderLayer(TransformerEncoder):
    """`TransformerEncoder` with `num_heads` heads of `head_dim` (None: `hidden / num_heads`)
    and, with `adapter_size` > 0, an adapter after its attention and feed-forward blocks."""

    def __init__(self, head_dim: int | None = None, adapter_size: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.head_dim, self.adapter_size = head_dim, adapter_size

    def build(self, inputs_shape) -> None:
        super().build(inputs_shape)
        # keras-hub builds its own sublayers in build(); the ones replaced here are swapped
        # in place, so the weight order (what model.keras stores) stays the parent's
        if self.adapter_size:
            # the dropout after each block is where its output meets the residual
            for name in ("_self_attention_dropout", "_feedforward_dropout"):
                adapter = Adapter(self.adapter_size, self.dropout, dtype=self.dtype_policy,
                                  name=name.strip("_").replace("dropout", "adapter"))
                adapter.build(inputs_shape)
                self._tracker.replace_tracked_value("layers", getattr(self, name), adapter)
                setattr(self, name, adapter)
        if self.head_dim is None or self.head_dim == inputs_shape[-1] // self.num_heads:
            return
        attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads, key_dim=self.head_dim, dropout=self.dropout,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            dtype=self.dtype_policy, name="self_attention_layer")
        attention.build(query_shape=inputs_shape, value_shape=inputs_shape)
        self._tracker.replace_tracked_value("layers", self._self_attention_layer, attention)
        self._self_attention_layer = attention

    def get_config(self) -> dict:
        return {**super().get_config(), "head_dim": self.head_dim,
                "adapter_size": self.adapter_size}


@keras.saving.register_keras_serializable(package="tfllm")
class BertVariantBackbone(keras_hub.models.BertBackbone):
    """`BertBackbone` of `EncoderLayer`s: `num_heads` heads of `head_dim` each (None: hidden /
    heads), adapters of `adapter_size` (0: none)."""

    def __init__(self, vocabulary_size: int, num_layers: int, num_heads: int, hidden_dim: int,
                 intermediate_dim: int, dropout: float = 0.1, max_sequence_length: int = 512,
                 num_segments: int = 2, head_dim: int | None = None, adapter_size: int = 0,
                 dtype=None, **kwargs) -> None:
        # BertBackbone builds its graph in __init__ from keras-hub's encoder, so the same
        # graph is built here from EncoderLayer
        self.token_embedding = keras.layers.ReversibleEmbedding(
            input_dim=vocabulary_size, output_dim=hidden_dim,
            embeddings_initializer=bert_kernel_initializer(), dtype=dtype, name="token_embedding")
        self.position_embedding = keras_hub.layers.PositionEmbedding(
            initializer=bert_kernel_initializer(), sequence_length=max_sequence_length,
            dtype=dtype, name="position_embedding")
        self.segment_embedding = keras.layers.Embedding(
            input_dim=num_segments, output_dim=hidden_dim,
            embeddings_initializer=bert_kernel_initializer(), dtype=dtype,
            name="segment_embedding")
        self.embeddings_add = keras.layers.Add(dtype=dtype, name="embeddings_add")
        self.embeddings_layer_norm = keras.layers.LayerNormalization(
            axis=-1, epsilon=1e-12, dtype=dtype, name="embeddings_layer_norm")
        self.embeddings_dropout = keras.layers.Dropout(dropout, dtype=dtype,
                                                       name="embeddings_dropout")
        self.transformer_layers = [
            EncoderLayer(head_dim=head_dim, adapter_size=adapter_size, num_heads=num_heads,
                         intermediate_dim=intermediate_dim, activation=gelu_approximate,
                         dropout=dropout, layer_norm_epsilon=1e-12,
                         kernel_initializer=bert_kernel_initializer(), dtype=dtype,
                         name=f"transformer_layer_{i}")
            for i in range(num_layers)]
        self.pooled_dense = keras.layers.Dense(
            hidden_dim, kernel_initializer=bert_kernel_initializer(), activation="tanh",
            dtype=dtype, name="pooled_dense")

        inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name)
                  for name in ("token_ids", "segment_ids", "padding_mask")}
        tokens = self.token_embedding(inputs["token_ids"])
        x = self.embeddings_add((tokens, self.position_embedding(tokens),
                                 self.segment_embedding(inputs["segment_ids"])))
        x = self.embeddings_dropout(self.embeddings_layer_norm(x))
        for layer in self.transformer_layers:
            x = layer(x, padding_mask=inputs["padding_mask"])
        # BertBackbone.__init__ is skipped on purpose (it would build keras-hub encoders)
        keras_hub.models.Backbone.__init__(
            self, inputs=inputs,
            outputs={"sequence_output": x, "pooled_output": self.pooled_dense(x[:, 0, :])},
            dtype=dtype, **kwargs)
        self.vocabulary_size, self.num_layers = vocabulary_size, num_layers
        self.num_heads, self.head_dim, self.hidden_dim = num_heads, head_dim, hidden_dim
        self.adapter_size = adapter_size
        self.intermediate_dim, self.dropout = intermediate_dim, dropout
        self.max_sequence_length, self.num_segments = max_sequence_length, num_segments
        self.cls_token_index = 0

    def get_config(self) -> dict:
        return {**super().get_config(), "head_dim": self.head_dim,
                "adapter_size": self.adapter_size}
