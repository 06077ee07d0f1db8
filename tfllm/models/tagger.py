"""Token classification head: backbone sequence output -> dropout -> dense per token.

keras-hub has a BERT text classifier but no token classifier, so this is the small
functional model a Keras user would write; it saves and loads as a plain `model.keras`.

Example:

>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> from tfllm.models.tagger import build_token_classifier
>>> backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2,
...                                          intermediate_dim=64), vocab_size=100)
>>> model = build_token_classifier(backbone, num_labels=5)
>>> model.output_shape
(None, None, 5)
"""

from __future__ import annotations

from typing import Any


def build_token_classifier(backbone: Any, num_labels: int, dropout: float = 0.1) -> Any:
    """Logits [batch, tokens, num_labels]; inputs are the backbone's (token_ids, segment_ids,
    padding_mask)."""
    import keras

    inputs = backbone.input
    sequence = backbone(inputs)["sequence_output"]
    sequence = keras.layers.Dropout(dropout, name="tagger_dropout")(sequence)
    logits = keras.layers.Dense(
        num_labels, name="tagger_logits",
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02))(sequence)
    return keras.Model(inputs, logits, name="bert_token_classifier")
