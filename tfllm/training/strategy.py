"""Which devices a run uses: the tf.distribute strategy, the precision policy, XLA.

Resolution (DESIGN.md): `TF_CONFIG` set -> MultiWorkerMirroredStrategy; more than one
GPU -> MirroredStrategy; one GPU -> OneDeviceStrategy(GPU); CPU -> the default strategy.
A name overrides: `default`, `one_device`, `mirrored`, `multi_worker`.

Example:

>>> from tfllm.training.strategy import resolve_precision, resolve_strategy
>>> resolve_strategy("default").num_replicas_in_sync
1
>>> resolve_precision("auto")  # on a CPU-only machine
'float32'
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tfllm.errors import InputError

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def resolve_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy for `name` (see module docstring); `auto` follows the devices present."""
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r} (choose from {', '.join(STRATEGIES)})")
    if name == "auto" and os.environ.get("TF_CONFIG"):
        name = "multi_worker"
    if name == "multi_worker":
        # Checked before anything touches the TF context: collectives must be configured first.
        if not os.environ.get("TF_CONFIG"):
            raise InputError("strategy multi_worker needs TF_CONFIG (cluster and task)")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as err:
            raise InputError(f"TF_CONFIG is not valid JSON: {err}") from err
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        if len(gpus) > 1:
            name = "mirrored"
        elif len(gpus) == 1:
            name = "one_device"
        else:
            name = "default"
    if name == "mirrored":
        # Several logical CPUs count as replicas too (that is how tests get 2 replicas).
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def resolve_precision(name: str = "auto") -> str:
    """A Keras dtype policy name: `auto` is mixed_float16 on GPU, float32 on CPU."""
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {name!r} (choose from {', '.join(PRECISIONS)})")
    if name == "auto":
        return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"
    return name


def resolve_jit(setting: bool | str) -> bool:
    """XLA on (`true`), off (`false`), or `auto`: on where a GPU is present."""
    if isinstance(setting, bool):
        return setting
    if setting not in ("auto", "true", "false"):
        raise InputError(f"jit_compile must be auto, true or false, got {setting!r}")
    if setting == "auto":
        return bool(tf.config.list_logical_devices("GPU"))
    return setting == "true"
