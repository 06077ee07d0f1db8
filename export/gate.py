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

    fp32_max_abs_logit_diff: float = 1e-4  # also for embeddings' components
    quantized_max_metric_drop: float = 0.01  # accuracy, as a fraction (1 point)
    quantized_min_label_agreement: float = 0.98
    quantized_min_mean_cosine: float = 0.99  # embeddings: rows' cosine to Keras', averaged
    quantized_max_spearman_drop: float = 0.5  # embeddings: points of Spearman x 100


QUANTIZED = ("onnx-int8", "onnx-fp16", "onnx-int8-static", "tflite-fp16", "tflite-dynamic",
             "tflite-int8")


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def onnx_runner(path: Path, output: str = "logits") -> Callable[[dict], np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtypes = {i.name: (np.int64 if "int64" in i.type else np.int32) for i in session.get_inputs()}

    def run(features: dict) -> np.ndarray:
        return session.run([output], {k: features[k].astype(dtypes[k]) for k in dtypes})[0]

    return run


def tflite_runner(path: Path, output: str = "logits") -> Callable[[dict], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    # LiteRT runs one thread unless told; onnxruntime and TF use every core by default.
    interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
    runner = interpreter.get_signature_runner()

    def run(features: dict) -> np.ndarray:
        return runner(**{k: v.astype(np.int32) for k, v in features.items()})[output]

    return run


def savedmodel_runner(directory: Path, output: str = "logits"
                      ) -> Callable[[list[str], list[str] | None], np.ndarray]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(directory)).signatures["serving_default"]

    def run(texts: list[str], pairs: list[str] | None) -> np.ndarray:
        kwargs = {"text": tf.constant(texts)}
        if pairs is not None:
            kwargs["text_pair"] = tf.constant(pairs)
        return serve(**kwargs)[output].numpy()

    return run


def savedmodel_ids_runner(directory: Path, output: str = "logits"
                          ) -> Callable[[dict], np.ndarray]:
    """The SavedModel's `token_ids` signature: the ONNX artifacts' inputs, for like-for-like timing."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(directory)).signatures["token_ids"]

    def run(features: dict) -> np.ndarray:
        return serve(**{k: tf.constant(v, tf.int32) for k, v in features.items()})[output].numpy()

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


def compare_embeddings(fmt: str, rows: np.ndarray, reference: np.ndarray,
                       thresholds: GateThresholds,
                       spearman: Callable[[np.ndarray], float]) -> dict:
    """The gate for sentence embeddings: each row's cosine to the Keras row, the largest
    component difference, and `spearman(rows)` (the task metric on the eval pairs) and its
    change from Keras'."""
    cosine = (rows * reference).sum(1) / (np.linalg.norm(rows, axis=1)
                                          * np.linalg.norm(reference, axis=1))
    metric = spearman(rows)
    result = {"max_abs_diff": float(np.abs(rows - reference).max()),
              "mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
              "metric_value": metric, "metric_delta": metric - spearman(reference)}
    if fmt in QUANTIZED:
        checks = {"mean_cosine": result["mean_cosine"] >= thresholds.quantized_min_mean_cosine,
                  "metric_drop": -result["metric_delta"] <= thresholds.quantized_max_spearman_drop}
    else:
        checks = {"max_abs_diff": result["max_abs_diff"] <= thresholds.fp32_max_abs_logit_diff}
    result["failed_checks"] = [name for name, ok in checks.items() if not ok]
    result["passed"] = not result["failed_checks"]
    return result


def latency_ms(run: Callable, inputs_b1, inputs_b32, repeats: int = 20) -> dict:
    """Median wall time of one call at B=1 and B=32 (the export passes the same token ids,
    padded to the model's max_len, to every artifact)."""
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


def best_of_rounds_ms(runs: list[Callable], inputs: dict, rounds: int = 5,
                      repeats: int = 10) -> list[float]:
    """Each runner's best round (median of `repeats` calls), the runners taking turns: two
    builds compared this way see the same drift of a shared host's speed."""
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            run(inputs)
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                run(inputs)
                times.append((time.perf_counter() - started) * 1000)
            best[i] = min(best[i], float(np.median(times)))
    return [round(t, 2) for t in best]
