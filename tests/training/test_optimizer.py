"""The optimizer switches of pretraining on a real WikiText-2 batch: LAMB's layer-wise trust
ratio, and float16 loss scaling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from tests.training.conftest import TINY
from tfllm.cli import main
from tfllm.data.tfrecords import load_pretraining_dataset
from tfllm.models.backbone import BackboneConfig, build_backbone
from tfllm.models.pretraining import BertPretrainer, pretraining_losses
from tfllm.training.optimizer import OptimizerConfig, build_optimizer
from tfllm.training.pretrain import read_data_info

REPO = Path(__file__).resolve().parents[2]


def _one_step_updates(name: str, data: Path) -> list[tuple[float, float, int]]:
    """(|w| before, |update|, size) per variable after one step of `name` on a real batch."""
    info = read_data_info(data)
    batch = next(iter(load_pretraining_dataset(data, info.seq_len, info.max_predictions, 8)))
    tf.keras.utils.set_random_seed(0)
    model = BertPretrainer(build_backbone(BackboneConfig(
        num_layers=1, hidden_dim=32, num_heads=2, intermediate_dim=64, max_sequence_length=64,
        dropout=0.0), info.vocab_size))
    model(batch)
    optimizer = build_optimizer(OptimizerConfig(
        name=name, learning_rate=1e-3, warmup_steps=0, final_lr_fraction=1.0, weight_decay=0.0,
        clipnorm=None), total_steps=10)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(pretraining_losses(model(batch, training=True), batch)[0])
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return [(float(np.linalg.norm(b)), float(np.linalg.norm(v.numpy() - b)), b.size)
            for b, v in zip(before, model.trainable_variables, strict=True)]


def test_lamb_scales_each_layers_step_to_its_weight_norm_unlike_adamw(tiny_data):
    # LAMB: update = lr * (|w| / |r|) * r, so |update| = lr * |w| for every variable with
    # nonzero weights. AdamW's first step moves each element with a gradient by about lr,
    # whatever the weights' scale: for the 0.02-initialised kernels, far from lr * |w|.
    lamb = _one_step_updates("lamb", tiny_data)
    adamw = _one_step_updates("adamw", tiny_data)
    checked = far = 0
    for (norm, step, _), (_, adam_step, _) in zip(lamb, adamw, strict=True):
        if norm > 0:
            assert math.isclose(step, 1e-3 * norm, rel_tol=1e-3), (step, norm)
            checked += 1
            far += not 0.5 < adam_step / (1e-3 * norm) < 2
    assert checked >= 10 and far >= 5, (checked, far)


def test_mixed_float16_pretraining_scales_the_loss_and_stays_finite(tmp_path, tiny_data):
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(REPO / "configs" / "pretrain" / "tiny.yaml"),
                 "--data", str(tiny_data), "--out", str(run), *TINY,
                 "--set", "train.steps=10", "--set", "train.precision=mixed_float16"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["precision"] == "mixed_float16" and math.isfinite(metrics["loss"])
    assert metrics["loss"] < math.log(read_data_info(tiny_data).vocab_size) + 1.0
    saved = dict(tf.train.list_variables(str(tf.train.latest_checkpoint(run / "checkpoints"))))
    scales = [name for name in saved if "dynamic_scale" in name]
    assert scales, "no loss-scale variable in the checkpoint: float16 trained unscaled"
    scale = tf.train.load_variable(str(tf.train.latest_checkpoint(run / "checkpoints")), scales[0])
    assert math.isfinite(float(scale)) and float(scale) >= 1.0
