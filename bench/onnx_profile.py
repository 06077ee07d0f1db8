"""Where an ONNX artifact's time goes at B=1, L=128: onnxruntime's profiler, summed per op type.

    .venv/bin/python bench/onnx_profile.py REPO/NAME/VERSION/model-int8.onnx
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

SEQ = 128
WARMUP = 5  # profiled too: the per-call figures divide by every run
CALLS = 30


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", help="an exported .onnx file")
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.enable_profiling = True
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(1000, 2000, (1, SEQ)),
             "attention_mask": np.ones((1, SEQ)), "token_type_ids": np.zeros((1, SEQ))}
    feeds = {i.name: feeds[i.name].astype("int64" if "int64" in i.type else "int32")
             for i in session.get_inputs()}
    for _ in range(WARMUP):
        session.run(None, feeds)
    started = time.perf_counter()
    for _ in range(CALLS):
        session.run(None, feeds)
    wall_ms = (time.perf_counter() - started) / CALLS * 1000
    trace = Path(session.end_profiling())
    events = [e for e in json.loads(trace.read_text())
              if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    trace.unlink()
    by_op: collections.Counter = collections.Counter()
    for event in events:
        by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(by_op.values())
    runs = WARMUP + CALLS
    print(f"{args.model}: {wall_ms:.2f} ms/call (profiling on), kernels "
          f"{total / runs / 1000:.2f} ms/call")
    for op, micros in by_op.most_common(15):
        print(f"  {op:28s} {micros / runs / 1000:6.2f} ms  {micros / total * 100:5.1f}%")


if __name__ == "__main__":
    main()
