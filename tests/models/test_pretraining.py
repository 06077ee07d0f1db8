"""The pretraining model: where its largest matmul runs under mixed precision."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfllm.models.backbone import BackboneConfig, build_backbone
from tfllm.models.pretraining import BertPretrainer


@pytest.mark.parametrize("policy,dtype", [("mixed_bfloat16", "bfloat16"), ("float32", "float32")])
def test_tied_mlm_projection_runs_in_the_policy_compute_dtype(policy, dtype):
    backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2,
                                             intermediate_dim=64), vocab_size=500, dtype=policy)
    model = BertPretrainer(backbone, nsp=False)
    batch = {"input_ids": np.ones((2, 16), "int32"), "input_mask": np.ones((2, 16), "int32"),
             "segment_ids": np.zeros((2, 16), "int32"),
             "masked_lm_positions": np.ones((2, 4), "int32")}
    model(batch)
    graph = tf.function(lambda b: model(b, training=True)).get_concrete_function(
        {k: tf.TensorSpec(v.shape, tf.int32) for k, v in batch.items()}).graph
    projection = [op for op in graph.get_operations() if op.type == "MatMul"
                  and "mlm_head" in op.name and "token_embedding" in op.name]
    assert projection, "no tied projection matmul found in the MLM head"
    assert {i.dtype.name for op in projection for i in op.inputs} == {dtype}
