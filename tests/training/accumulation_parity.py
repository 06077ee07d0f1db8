"""Run in a fresh process: 2 logical CPUs, then the same 16 examples per optimizer update
as one batch, as 2 accumulated micro-batches of 8 (one replica), and as 2 accumulated
micro-batches on 2 replicas with clipping active; and, as a control, 8-example updates.

Prints one JSON line: each run's final backbone weights' largest difference from the
one-batch run's.
"""

import json
import sys

import h5py
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

from tfllm.config import load_config  # noqa: E402
from tfllm.training.pretrain import PretrainConfig, pretrain  # noqa: E402

config, data, out = sys.argv[1], sys.argv[2], sys.argv[3]
overrides = sys.argv[4:]
RUNS = {  # name -> (strategy, global batch, micro-steps, accumulation)
    "one_batch_of_16": ("default", 16, 3, 1),
    "accumulated_2x8": ("default", 8, 6, 2),
    "accumulated_2x8_on_2_replicas": ("mirrored", 8, 6, 2),
    "control_batches_of_8": ("default", 8, 3, 1),
}
weights = {}
for name, (strategy, batch, steps, accumulation) in RUNS.items():
    cfg = load_config(PretrainConfig, config, overrides + [
        f"train.strategy={strategy}", f"train.batch_size={batch}", f"train.steps={steps}",
        f"optimizer.gradient_accumulation_steps={accumulation}"])
    pretrain(cfg, data, f"{out}/{name}", quiet=True)
    with h5py.File(f"{out}/{name}/backbone/model.weights.h5", "r") as f:
        found = {}
        f.visititems(lambda key, obj, found=found: found.__setitem__(key, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    weights[name] = found
reference = weights.pop("one_batch_of_16")
result = {name: max(float(np.abs(w[key] - value).max()) for key, value in reference.items())
          for name, w in weights.items()}
print("RESULT " + json.dumps(result))
