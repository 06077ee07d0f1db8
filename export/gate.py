"""The parity gate: run each artifact with its own runtime on real eval data and compare
it with the Keras model (max |logit diff|, label agreement, task metric and its delta).

ONNX artifacts are fed by the TF-free tokenizer (`tokenizers`), exactly as the server
runs them; the SavedModel tokenizes in its own graph from raw strings.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class GateThresholds:
    """Pass/fail limits (DESIGN.md defaults)."""

    fp32_max_abs_logit_diff: float = 1e-4
    quantized_max_metric_drop: float = 0.01  # accuracy, as a fraction (1 point)
    quantized_min_label_agreement: float = 0.98


QUANTIZED = ("onnx-int8", "onnx-fp16", "onnx-int8-static", "tflite-fp16", "tflite-dynamic",
             "tflite-int8")


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def onnx_runner(path: Path) -> Callable[[dict], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtypes = {i.name: (np.int64 if "int64" in i.type else np.int32) for i in session.get_inputs()}

    def run(features: dict) -> np.ndarray:
        return session.run(["logits"], {k: features[k].astype(dtypes[k]) for k in dtypes})[0]

    return run


def tflite_runner(path: Path) -> Callable[[dict], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    # LiteRT runs one thread unless told; onnxruntime and TF use every core by default.
    interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
    runner = interpreter.get_signature_runner()

    def run(features: dict) -> np.ndarray:
        return runner(**{k: v.astype(np.int32) for k, v in features.items()})["logits"]

    return run


def savedmodel_runner(directory: Path) -> Callable[[list[str], list[str] | None], np.ndarray]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(directory)).signatures["serving_default"]

    def run(texts: list[str], pairs: list[str] | None) -> np.ndarray:
        kwargs = {"text": tf.constant(texts)}
        if pairs is not None:
            kwargs["text_pair"] = tf.constant(pairs)
        return serve(**kwargs)["logits"].numpy()

    return run


def argmax_rows(logits: np.ndarray) -> np.ndarray:
    """Each row's best label id: how a classifier (or an `argmax`-decoded tagger) predicts."""
    return logits.argmax(-1)


def compare(fmt: str, logits: np.ndarray, reference: np.ndarray, labels: np.ndarray,
            thresholds: GateThresholds,
            metric_fn: Callable[[np.ndarray], float] | None = None,
            decode: Callable[[np.ndarray], np.ndarray] = argmax_rows) -> dict:
    """The gate's numbers for one artifact, and whether it passes. Rows are examples (or
    words, for token classification); `decode(logits)` gives the predicted label ids as the
    run predicts them (default: argmax; NER: the run's decoding per sentence) and
    `metric_fn(predicted ids)` the task metric (default: accuracy against `labels`)."""
    predicted, expected = decode(logits), decode(reference)
    metric_fn = metric_fn or (lambda ids: float((ids == labels).mean()))
    metric, reference_metric = metric_fn(predicted), metric_fn(expected)
    result = {
        "max_abs_logit_diff": float(np.abs(logits - reference).max()),
        "label_agreement": float((predicted == expected).mean()),
        "metric_value": metric,
        "metric_delta": metric - reference_metric,
    }
    if fmt in QUANTIZED:
        checks = {
            "metric_drop": -result["metric_delta"] <= thresholds.quantized_max_metric_drop,
            "label_agreement": result["label_agreement"] >= thresholds.quantized_min_label_agreement,
        }
    else:
        checks = {"max_abs_logit_diff":
                  result["max_abs_logit_diff"] <= thresholds.fp32_max_abs_logit_diff}
    result["failed_checks"] = [name for name, ok in checks.items() if not ok]
    result["passed"] = not result["failed_checks"]
    return result


def latency_ms(run: Callable, inputs_b1, inputs_b32, repeats: int = 20) -> dict:
    """Median wall time of one call at B=1 and B=32 (inputs padded to L=128)."""
    out = {}
    for key, inputs in (("b1", inputs_b1), ("b32", inputs_b32)):
        run(*inputs)
        times = []
        for _ in range(repeats if key == "b1" else max(3, repeats // 4)):
            started = time.perf_counter()
            run(*inputs)
            times.append((time.perf_counter() - started) * 1000)
        out[key] = round(float(np.median(times)), 2)
    return out
