"""Parameter-efficient fine-tuning switches: freezing and LoRA on a keras-hub BertBackbone.

Example:

>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> from tfllm.finetune.peft import enable_lora, trainable_count
>>> backbone = build_backbone(BackboneConfig(num_layers=2, hidden_dim=32, num_heads=2,
...                                          intermediate_dim=64), vocab_size=100)
>>> enable_lora(backbone, rank=4, alpha=8.0)
>>> 0 < trainable_count(backbone) < backbone.count_params() // 2
True
"""

from __future__ import annotations

from typing import Any

import numpy as np


def freeze(backbone: Any, layers: int) -> None:
    """Freeze the embeddings and the first `layers` transformer layers."""
    for layer in (backbone.token_embedding, backbone.position_embedding,
                  backbone.segment_embedding, backbone.embeddings_layer_norm):
        layer.trainable = False
    for layer in backbone.transformer_layers[:layers]:
        layer.trainable = False


def enable_lora(backbone: Any, rank: int, alpha: float | None = None) -> None:
    """keras-hub's `enable_lora` (query/value; freezes the rest of the backbone), with the
    LoRA scale alpha/rank set on each adapted layer (keras-hub's method takes no alpha)
    and the adapted layers' biases frozen.
    The pooler stays trainable: in BERT fine-tuning it belongs to the classification head."""
    backbone.enable_lora(rank)
    for layer in backbone._flatten_layers(include_self=False):
        if getattr(layer, "lora_enabled", False):
            if alpha is not None:
                layer.lora_alpha = float(alpha)
            if layer.bias is not None:  # keras-hub leaves the biases training; LoRA does not
                layer.bias.trainable = False
    backbone.get_layer("pooled_dense").trainable = True


def trainable_count(model: Any) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))
