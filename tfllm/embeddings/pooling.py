"""Sentence embeddings from a BERT backbone: mean of the token vectors over the real (not
padding) tokens, L2-normalised, as sentence-transformers computes all-MiniLM-L6-v2's
(its `1_Pooling/config.json` says `pooling_mode_mean_tokens`).

Keras already has both pieces: `GlobalAveragePooling1D` averages under a mask and
`UnitNormalization` divides by the L2 norm, so the embedder is a small functional model
that saves, loads and exports like any other.

Example:

>>> import numpy as np
>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> from tfllm.embeddings.pooling import build_embedder
>>> backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2,
...                                          intermediate_dim=64), vocab_size=100)
>>> model = build_embedder(backbone)
>>> x = {"token_ids": np.array([[2, 7, 9, 3, 0, 0]]), "segment_ids": np.zeros((1, 6), "int32"),
...      "padding_mask": np.array([[1, 1, 1, 1, 0, 0]])}
>>> e = np.asarray(model.predict_on_batch(x))
>>> e.shape, round(float(np.linalg.norm(e)), 5)
((1, 32), 1.0)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tfllm.errors import InputError

POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}


def check_pooling(folder: str | Path) -> None:
    """A sentence-transformers checkpoint names its pooling in `1_Pooling/config.json`; tfllm
    embeds with mean pooling only, so any other mode is an error naming it."""
    config = Path(folder) / "1_Pooling" / "config.json"
    if not config.is_file():
        return  # keras-hub presets and tfllm runs carry no pooling: mean, as documented
    modes = [name for key, name in POOLING_MODES.items()
             if json.loads(config.read_text(encoding="utf-8")).get(key)]
    if modes != ["mean"]:
        raise InputError(f"{config}: the checkpoint asks for {' + '.join(modes) or 'no'} "
                         "pooling; tfllm embeds with mean pooling over the tokens only")


def build_embedder(backbone: Any) -> Any:
    """`{token_ids, segment_ids, padding_mask}` -> `embedding` [batch, hidden], unit length."""
    import keras

    inputs = backbone.input
    tokens = backbone(inputs)["sequence_output"]
    mask = keras.ops.cast(inputs["padding_mask"], "bool")
    pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(tokens, mask=mask)
    embedding = keras.layers.UnitNormalization(name="embedding")(
        keras.ops.cast(pooled, "float32"))
    return keras.Model(inputs, embedding, name="bert_sentence_embedder")
