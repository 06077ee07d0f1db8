"""BERT pretraining model: backbone + MLM head (tied, masked positions only) + NSP head.

Inputs use the pretraining-data feature names; outputs are logits. The losses and the
counts behind the metrics live beside it in `pretraining_losses`.

Example:

>>> import numpy as np
>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> from tfllm.models.pretraining import BertPretrainer
>>> backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2,
...                                          intermediate_dim=64), vocab_size=100)
>>> model = BertPretrainer(backbone)
>>> batch = {"input_ids": np.ones((2, 16), "int32"), "input_mask": np.ones((2, 16), "int32"),
...          "segment_ids": np.zeros((2, 16), "int32"),
...          "masked_lm_positions": np.ones((2, 4), "int32")}
>>> out = model(batch)
>>> tuple(out["mlm_logits"].shape), tuple(out["nsp_logits"].shape)
((2, 4, 100), (2, 2))
"""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfllm")
class BertPretrainer(keras.Model):
    """Backbone + `MaskedLMHead` tied to the token embedding (+ optional NSP head)."""

    def __init__(self, backbone: keras.Model, nsp: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone
        self.nsp = nsp
        # The tied projection multiplies the features by the raw fp32 embedding variable, so
        # under mixed precision it silently ran in fp32 (the largest matmul of the step at
        # the masked positions); compute it in the policy's compute dtype like every Dense.
        backbone.token_embedding.reverse_dtype = backbone.dtype_policy.compute_dtype
        self.mlm_head = keras_hub.layers.MaskedLMHead(
            token_embedding=backbone.token_embedding,
            intermediate_activation=keras.activations.gelu,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=backbone.dtype_policy,
            name="mlm_head",
        )
        self.nsp_head = (
            keras.layers.Dense(2, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
                               dtype=backbone.dtype_policy, name="nsp_head")
            if nsp else None
        )

    def call(self, inputs: dict, training: bool = False) -> dict:
        features = self.backbone(
            {
                "token_ids": inputs["input_ids"],
                "segment_ids": inputs["segment_ids"],
                "padding_mask": inputs["input_mask"],
            },
            training=training,
        )
        outputs = {
            "mlm_logits": self.mlm_head(features["sequence_output"],
                                        mask_positions=inputs["masked_lm_positions"])
        }
        if self.nsp_head is not None:
            outputs["nsp_logits"] = self.nsp_head(features["pooled_output"])
        return outputs

    def get_config(self) -> dict:
        return {**super().get_config(), "nsp": self.nsp,
                "backbone": keras.saving.serialize_keras_object(self.backbone)}

    @classmethod
    def from_config(cls, config: dict) -> BertPretrainer:
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def pretraining_losses(outputs: dict, batch: dict) -> tuple[tf.Tensor, dict]:
    """Per-example loss (MLM weighted mean over real predictions + NSP) and metric counts.

    Per-example losses let `tf.nn.compute_average_loss` divide by the global batch,
    so N replicas give the same update as one replica on the same global batch.
    """
    weights = tf.cast(batch["masked_lm_weights"], tf.float32)
    labels = batch["masked_lm_ids"]
    logits = tf.cast(outputs["mlm_logits"], tf.float32)
    token_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    predictions_per_example = tf.reduce_sum(weights, axis=1)
    mlm_loss = tf.reduce_sum(token_loss * weights, axis=1) / tf.maximum(predictions_per_example, 1.0)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=labels.dtype), labels), tf.float32)
    counts = {
        "mlm_loss_sum": tf.reduce_sum(token_loss * weights),
        "mlm_correct": tf.reduce_sum(correct * weights),
        "mlm_count": tf.reduce_sum(weights),
    }
    per_example = mlm_loss
    if "nsp_logits" in outputs:
        nsp_labels = tf.reshape(batch["next_sentence_labels"], [-1])
        nsp_logits = tf.cast(outputs["nsp_logits"], tf.float32)
        nsp_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=nsp_labels, logits=nsp_logits)
        per_example = per_example + nsp_loss
        nsp_hit = tf.equal(tf.argmax(nsp_logits, -1, output_type=nsp_labels.dtype), nsp_labels)
        counts["nsp_loss_sum"] = tf.reduce_sum(nsp_loss)
        counts["nsp_correct"] = tf.reduce_sum(tf.cast(nsp_hit, tf.float32))
        counts["nsp_count"] = tf.cast(tf.size(nsp_labels), tf.float32)
    return per_example, counts
