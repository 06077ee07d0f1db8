"""Parameter-efficient fine-tuning switches on a keras-hub BertBackbone: freezing, LoRA, and
bottleneck adapters.

Example:

>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> from tfllm.finetune.peft import enable_lora, trainable_count, with_adapters
>>> config = BackboneConfig(num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64)
>>> backbone = build_backbone(config, vocab_size=100)
>>> enable_lora(backbone, rank=4, alpha=8.0)
>>> 0 < trainable_count(backbone) < backbone.count_params() // 2
True
>>> adapted = with_adapters(build_backbone(config, vocab_size=100), size=4)
>>> sorted({w.path.split("/")[1] for w in adapted.trainable_weights if "adapter" in w.path})
['feedforward_adapter', 'self_attention_adapter']
"""

from __future__ import annotations

from pathlib import Path
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


def with_adapters(backbone: Any, size: int) -> Any:
    """A copy of `backbone` with a bottleneck adapter of `size` after the attention and the
    feed-forward block of every layer (`tfllm.models.encoder`), the other weights copied;
    only the adapters, the LayerNorms and the pooler train (the head is the caller's)."""
    from tfllm.models.encoder import BertVariantBackbone

    adapted = BertVariantBackbone(**{**backbone.get_config(), "adapter_size": size})
    weights = {w.path: w for w in backbone.weights}
    for variable in adapted.weights:
        if variable.path in weights:
            variable.assign(weights[variable.path])
        elif "adapter" not in variable.path:
            raise ValueError(f"with_adapters: no weight {variable.path} in the backbone")
        variable.trainable = any(key in variable.path for key in _ADAPTER_TRAINS)
    return adapted


# what trains with adapters, by weight path (Houlsby et al. 2019 train the LayerNorms too)
_ADAPTER_TRAINS = ("adapter/", "layer_norm/", "pooled_dense/")


def save_trained_weights(model: Any, path: Path) -> None:
    """The model's trainable weights alone, by path (safetensors; an adapter run's adapters,
    LayerNorms, pooler and head), written under a temporary name and renamed."""
    from safetensors.numpy import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({w.path: np.asarray(w) for w in model.trainable_weights}, str(tmp))
    tmp.replace(path)


def load_trained_weights(model: Any, path: Path) -> int:
    """Put weights saved by `save_trained_weights` into `model` (built the same way, e.g.
    `with_adapters` on the same base checkpoint); returns how many were set."""
    from safetensors.numpy import load_file

    saved = load_file(str(path))
    variables = {w.path: w for w in model.weights}
    missing = sorted(set(saved) - set(variables))
    if missing:
        raise ValueError(f"{path}: the model has no weight {missing[0]} "
                         f"({len(missing)} missing)")
    untouched = sorted({w.path for w in model.trainable_weights} - set(saved))
    if untouched:
        raise ValueError(f"{path}: no value for the trainable weight {untouched[0]} "
                         f"({len(untouched)} missing)")
    for name, value in saved.items():
        variables[name].assign(value)
    return len(saved)


def trainable_count(model: Any) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))
