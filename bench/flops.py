"""FLOPs of one BERT pretraining sample, shared by the TensorFlow and the JAX benchmarks."""

from __future__ import annotations


def train_flops_per_sample(layers: int, hidden: int, ffn: int, seq: int, predictions: int,
                           vocab: int) -> float:
    """3x the forward matmul FLOPs: projections, attention, feed-forward, MLM head."""
    per_layer = 2 * seq * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * seq * seq * hidden
    head = 2 * predictions * (hidden * hidden + hidden * vocab)
    return 3 * (layers * per_layer + head)
