"""Run in a fresh process: 2 logical CPUs, then the same global batch on 1 and 2 replicas.

Prints one JSON line: the per-step losses of each run, and the error for an indivisible batch.
"""

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

from tfllm.config import load_config  # noqa: E402
from tfllm.errors import InputError  # noqa: E402
from tfllm.training.pretrain import PretrainConfig, pretrain  # noqa: E402

config, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
overrides = sys.argv[4:]
result = {}
for strategy in ("default", "mirrored"):
    cfg = load_config(PretrainConfig, config, overrides + [f"train.strategy={strategy}"])
    metrics = pretrain(cfg, data, f"{out}/{strategy}", quiet=True)
    result[strategy] = {"loss": metrics["loss"], "replicas": metrics["replicas"]}
try:
    cfg = load_config(PretrainConfig, config, overrides + ["train.strategy=mirrored",
                                                          "train.batch_size=7"])
    pretrain(cfg, data, f"{out}/odd", quiet=True)
    result["odd_batch_error"] = None
except InputError as err:
    result["odd_batch_error"] = str(err)
print("RESULT " + json.dumps(result))
