"""The keras-hub side of `bench/train.py` on Keras 3's JAX backend, for machines without TensorFlow.

The lent GPU machines carry JAX (CUDA 13) but no TensorFlow, and TensorFlow with its CUDA 12
libraries is far larger than what can travel there, so `tfllm pretrain` itself cannot run on
them. This measures what can: the same model size and shapes as `bench/train.py` (a plain
`keras_hub.models.BertMaskedLM` + `fit`, as a Keras user writes it), with mixed precision off
and on, against the matmul peaks measured in the same run.

    KERAS_BACKEND=jax python bench/train_jax.py [--size mini] [--batches 32,256,1024]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import jax  # noqa: E402
import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from flops import best_gflops, train_flops_per_sample  # noqa: E402
from keras_hub_baseline import compiled_masked_lm  # noqa: E402
from report import markdown_table, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VOCAB, SEQ, PREDICTIONS = 8000, 128, 20  # what bench/train.py's WikiText-2 data gives


def matmul_peak(dtype: str, n: int, repeats: int = 10, precision: str | None = None) -> float:
    """GFLOP/s of a large square matmul chain in one jitted call (the MFU ceiling)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype="float32").astype(dtype)
    scale = np.asarray(1e-3, dtype=dtype)

    @jax.jit
    def run(x):
        for _ in range(repeats):
            x = jax.numpy.matmul(x, a, precision=precision) * scale
        return x

    run(a).block_until_ready()
    return best_gflops(lambda: run(a).block_until_ready(), 2 * n**3 * repeats)


def synthetic_batches(samples: int, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """Random token ids in the shapes of the pretraining TFRecords (FLOPs do not depend on them)."""
    rng = np.random.default_rng(seed)
    x = {"token_ids": rng.integers(5, VOCAB, (samples, SEQ), dtype=np.int32),
         "segment_ids": np.zeros((samples, SEQ), np.int32),
         "padding_mask": np.ones((samples, SEQ), np.int32),
         "mask_positions": np.sort(rng.integers(1, SEQ, (samples, PREDICTIONS)), 1).astype(np.int32)}
    return x, rng.integers(5, VOCAB, (samples, PREDICTIONS), dtype=np.int32), np.ones(
        (samples, PREDICTIONS), np.float32)


def keras_hub_fit_rate(cfg: dict, precision: str, batch: int, steps: int,
                       warmup: int) -> tuple[float, float]:
    """Samples/s of `BertMaskedLM.fit` over `steps` steps after a `warmup`-step fit (compiles)."""
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(42)
    model = compiled_masked_lm(cfg["model"], VOCAB, cfg["optimizer"]["learning_rate"])
    x, y, w = synthetic_batches(batch * (steps + warmup))
    # keras-hub's PipelineModel.fit batches arrays through tf.data or grain, neither of which is
    # on the machine; the model has no preprocessor, so Keras' own fit takes the arrays as they are
    fit = keras.Model.fit
    head = slice(0, batch * warmup)
    fit(model, {k: v[head] for k, v in x.items()}, y[head], sample_weight=w[head],
        batch_size=batch, epochs=1, shuffle=False, verbose=0)
    rest = slice(batch * warmup, None)
    started = time.perf_counter()
    history = fit(model, {k: v[rest] for k, v in x.items()}, y[rest], sample_weight=w[rest],
                  batch_size=batch, epochs=1, shuffle=False, verbose=0)
    # fit returns host floats for the epoch's logs, so every step has finished here
    elapsed = time.perf_counter() - started
    keras.mixed_precision.set_global_policy("float32")
    return steps * batch / elapsed, float(history.history["loss"][-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="mini")
    parser.add_argument("--batches", default="32,256,1024")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--peak-n", type=int, default=8192)
    args = parser.parse_args()
    cfg = yaml.safe_load((REPO / "configs" / "pretrain" / f"{args.size}.yaml").read_text())
    model_cfg = cfg["model"]
    device = jax.devices()[0]
    peaks = {"float32 (XLA default, TF32 allowed)": matmul_peak("float32", args.peak_n),
             "float32 (precision=highest)": matmul_peak("float32", args.peak_n,
                                                        precision="highest"),
             "bfloat16": matmul_peak("bfloat16", args.peak_n),
             "float16": matmul_peak("float16", args.peak_n)}
    print(device, {k: round(v) for k, v in peaks.items()}, flush=True)
    peak_of = {"float32": peaks["float32 (XLA default, TF32 allowed)"],
               "mixed_float16": peaks["float16"], "mixed_bfloat16": peaks["bfloat16"]}
    flops = train_flops_per_sample(model_cfg["num_layers"], model_cfg["hidden_dim"],
                                   model_cfg["intermediate_dim"], SEQ, PREDICTIONS, VOCAB)
    results, rows = [], []
    for batch in [int(b) for b in args.batches.split(",")]:
        fp32_rate = None
        for precision in ("float32", "mixed_float16", "mixed_bfloat16"):
            rate, loss = keras_hub_fit_rate(cfg, precision, batch, args.steps, args.warmup)
            fp32_rate = fp32_rate or rate
            result = {"precision": precision, "batch": batch, "samples_per_second": rate,
                      "tokens_per_second": rate * SEQ, "step_ms": 1000 * batch / rate,
                      "tflops": rate * flops / 1e12,
                      "mfu_same_dtype_peak": rate * flops / 1e9 / peak_of[precision],
                      "vs_float32": rate / fp32_rate, "final_loss": loss}
            results.append(result)
            rows.append([precision, batch, f"{rate:,.0f}", f"{rate * SEQ:,.0f}",
                         f"{result['step_ms']:.1f}", f"{result['tflops']:.1f}",
                         f"{result['mfu_same_dtype_peak']:.3f}", f"{result['vs_float32']:.2f}x",
                         f"{loss:.3f}"])
            print(rows[-1], flush=True)
    table = markdown_table(["precision", "global batch", "samples/s", "tokens/s", "step ms",
                            "TFLOP/s", "MFU (peak of its dtype)", "vs float32", "loss"], rows)
    notes = (
        f"Keras {keras.__version__} on JAX {jax.__version__} ({device.device_kind}), keras-hub "
        f"{keras_hub.__version__}; no TensorFlow on this machine, so `tfllm pretrain` (TF) did not "
        f"run here: this is the keras-hub baseline of `bench/train.py`'s CPU table, same model "
        f"(`{args.size}`, L{model_cfg['num_layers']}/H{model_cfg['hidden_dim']}), L={SEQ}, "
        f"{PREDICTIONS} masked positions, vocab {VOCAB}, AdamW, synthetic token ids, "
        f"{args.steps} timed steps after a {args.warmup}-step fit that compiles. Matmul peaks in "
        f"the same run ({args.peak_n}x{args.peak_n}, GFLOP/s): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in peaks.items())
        + f". FLOPs per sample {flops / 1e9:.2f} GFLOP (as bench/train.py)."
    )
    write_results("train-jax", f"Pretraining throughput, keras-hub on JAX ({args.size}, L={SEQ})",
                  {"size": args.size, "seq_len": SEQ, "device": str(device.device_kind),
                   "peaks_gflops": peaks, "flops_per_sample": flops, "results": results},
                  table, notes)
    print(table)
    print(notes)


if __name__ == "__main__":
    main()
