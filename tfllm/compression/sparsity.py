"""Unstructured magnitude pruning: the smallest weights of every encoder matrix set to zero,
and kept at zero while the model trains on.

The zeros make the model compress (gzip, zip) to a fraction of its size, but dense kernels
multiply zeros as fast as any other number: no speed comes from this kind of pruning, only
from the structured kind (`tfllm.compression.prune`).

Example:

>>> import numpy as np
>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> from tfllm.compression.sparsity import encoder_kernels, keep_zeros, magnitude_prune
>>> backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2,
...                                          intermediate_dim=64), vocab_size=100)
>>> round(magnitude_prune(backbone, 0.5), 2)
0.5
>>> keep_zeros(backbone)
6
>>> kernel = encoder_kernels(backbone)[0]
>>> _ = kernel.assign(kernel.constraint(kernel + 1.0))  # what the optimizer does after a step
>>> round(float(np.mean(np.asarray(kernel) == 0)), 2)
0.5
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfllm.models.encoder import projections


def encoder_kernels(backbone: Any) -> list:
    """The kernels of every encoder layer's dense projections (query, key, value, attention
    output, feed-forward in and out): the weights magnitude pruning acts on."""
    return [dense.kernel for layer in backbone.transformer_layers
            for dense in projections(layer)]


def magnitude_prune(backbone: Any, sparsity: float) -> float:
    """Zero the `sparsity` share of each encoder kernel with the smallest magnitude; returns
    the share of encoder kernel weights that are zero afterwards."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    zeros = total = 0
    for kernel in encoder_kernels(backbone):
        value = np.asarray(kernel)
        cut = int(round(sparsity * value.size))
        if cut:
            smallest = np.argpartition(np.abs(value).reshape(-1), cut - 1)[:cut]
            flat = value.reshape(-1).copy()
            flat[smallest] = 0.0
            value = flat.reshape(value.shape)
            kernel.assign(value)
        zeros += int((value == 0).sum())
        total += value.size
    return zeros / total


class KeepZeros(keras.constraints.Constraint):
    """Sets the masked-out entries back to zero after each optimizer step."""

    def __init__(self, mask: np.ndarray) -> None:
        # a tensor made once, eagerly: the train step captures it instead of baking a copy
        # of every mask into its graph as a constant
        self.mask = keras.ops.convert_to_tensor(mask)

    def __call__(self, w: Any) -> Any:
        return keras.ops.where(self.mask, w, keras.ops.zeros_like(w))


def keep_zeros(backbone: Any) -> int:
    """Every encoder kernel holding exact zeros (a magnitude-pruned init) keeps them while
    training; returns how many kernels got the constraint."""
    count = 0
    for kernel in encoder_kernels(backbone):
        if not isinstance(kernel, keras.Variable):  # LoRA's merged kernel: no weight of its own
            raise ValueError("keep_zeros: the backbone has LoRA on; its update is dense")
        mask = np.asarray(kernel) != 0
        if not mask.all():
            kernel.constraint = KeepZeros(mask)
            count += 1
    return count
