"""The baseline both pretraining benchmarks time: a plain `keras_hub.models.BertMaskedLM`,
compiled as a Keras user would. No TensorFlow import, so the JAX benchmark can use it too.

>>> model = compiled_masked_lm({"num_layers": 1, "num_heads": 2, "hidden_dim": 32,
...                             "intermediate_dim": 64, "max_sequence_length": 64}, 100, 1e-3)
>>> model.backbone.count_params() > 0
True
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import keras_hub

DIMS = ("num_layers", "num_heads", "hidden_dim", "intermediate_dim", "max_sequence_length")


def compiled_masked_lm(dims: Mapping, vocab_size: int, learning_rate: float,
                       dtype: str | None = None):
    """`BertBackbone` at `dims` (and dtype policy) + `BertMaskedLM`, AdamW, masked sparse
    cross-entropy."""
    backbone = keras_hub.models.BertBackbone(vocabulary_size=vocab_size, dtype=dtype,
                                             **{key: dims[key] for key in DIMS})
    model = keras_hub.models.BertMaskedLM(backbone)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()])
    return model
