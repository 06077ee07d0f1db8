"""FLOP counts and timed GFLOP/s, shared by the TensorFlow and the JAX pretraining benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def train_flops_per_sample(layers: int, hidden: int, ffn: int, seq: int, predictions: int,
                           vocab: int) -> float:
    """3x the forward matmul FLOPs: projections, attention, feed-forward, MLM head."""
    per_layer = 2 * seq * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * seq * seq * hidden
    head = 2 * predictions * (hidden * hidden + hidden * vocab)
    return 3 * (layers * per_layer + head)


def best_gflops(call: Callable[[], object], flops: float, tries: int = 3) -> float:
    """GFLOP/s of the fastest of `tries` timed calls; `call` must return only once it is done."""
    best = 0.0
    for _ in range(tries):
        started = time.perf_counter()
        call()
        best = max(best, flops / (time.perf_counter() - started) / 1e9)
    return best
