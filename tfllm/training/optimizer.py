"""Optimizer from config: AdamW or LAMB (Keras), linear warmup then cosine decay,
global clipnorm, gradient accumulation, loss scaling for float16.

Example:

>>> from tfllm.training.optimizer import OptimizerConfig, build_optimizer
>>> opt = build_optimizer(OptimizerConfig(name="lamb", learning_rate=1e-3), total_steps=100)
>>> type(opt).__name__
'Lamb'
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from tfllm.errors import InputError


@dataclass
class OptimizerConfig:
    """Optimizer and schedule; `learning_rate` is the peak after warmup."""

    name: str = "adamw"  # adamw | lamb
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    final_lr_fraction: float = 0.0
    weight_decay: float = 0.01
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-6
    clipnorm: float | None = 1.0  # global norm over all gradients
    gradient_accumulation_steps: int = 1


def build_schedule(cfg: OptimizerConfig, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(total_steps - warmup, 1),
        alpha=cfg.final_lr_fraction,
        warmup_target=cfg.learning_rate,
        warmup_steps=warmup,
    )


def build_optimizer(cfg: OptimizerConfig, total_steps: int, loss_scale: bool = False):
    """The Keras optimizer; wrapped in `LossScaleOptimizer` for mixed_float16."""
    kwargs = dict(
        learning_rate=build_schedule(cfg, total_steps),
        weight_decay=cfg.weight_decay,
        beta_1=cfg.beta_1,
        beta_2=cfg.beta_2,
        epsilon=cfg.epsilon,
        global_clipnorm=cfg.clipnorm,
        gradient_accumulation_steps=(cfg.gradient_accumulation_steps
                                     if cfg.gradient_accumulation_steps > 1 else None),
    )
    if cfg.name == "adamw":
        optimizer = keras.optimizers.AdamW(**kwargs)
    elif cfg.name == "lamb":
        optimizer = keras.optimizers.Lamb(**kwargs)
    else:
        raise InputError(f"unknown optimizer {cfg.name!r} (adamw or lamb)")
    # BERT practice: no weight decay on LayerNorm parameters and biases.
    optimizer.exclude_from_weight_decay(var_names=["layer_norm", "bias", "gamma", "beta"])
    return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scale else optimizer
