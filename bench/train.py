"""Pretraining throughput: plain keras-hub `BertMaskedLM.fit` vs `tfllm pretrain`, one run.

Same model size, sequence length, batch and data (TFRecords from `tfllm data pretrain`
on WikiText-2), side by side in one process, with the fp32 (and bf16) matmul peak
measured in the same run for MFU.

    .venv/bin/python bench/train.py [--size mini] [--steps 60]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from flops import best_gflops, train_flops_per_sample  # noqa: E402
from keras_hub_baseline import compiled_masked_lm  # noqa: E402
from report import markdown_table, write_results  # noqa: E402

from tfllm.config import load_config  # noqa: E402
from tfllm.data.locations import data_root  # noqa: E402
from tfllm.data.stages import PretrainDataConfig, build_pretraining_data, build_vocab  # noqa: E402
from tfllm.data.tfrecords import load_pretraining_dataset  # noqa: E402
from tfllm.training.pretrain import PretrainConfig, pretrain, read_data_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WINDOW = 10  # tfllm steps per log window; the baseline fits as many steps after each


def matmul_peak(dtype: tf.DType, n: int = 2048, repeats: int = 20):
    """A function returning the GFLOP/s of a large square matmul right now (the ceiling MFU is
    measured against); traced once, so it can be called between training windows."""
    a = tf.cast(tf.random.normal((n, n), dtype=tf.float32), dtype)

    @tf.function
    def run(x):
        for _ in range(repeats):
            x = tf.linalg.matmul(x, a) * tf.cast(1e-3, dtype)
        return x

    run(a)
    return lambda tries=3: best_gflops(lambda: run(a).numpy(), 2 * n**3 * repeats, tries)


def step_breakdown(cfg: PretrainConfig, info, precision: str, fused: bool, repeats: int = 15,
                   profile_steps: int = 5) -> tuple[dict, dict]:
    """Where a step's time goes, on one fixed batch, no NSP: forward (with and without
    dropout), forward+backward, full step with the optimizer (milliseconds); then the TF
    profiler over `profile_steps` full steps, op time per step summed by op type. `fused`:
    tfllm's XLA-fused GELU and dropout, else keras-hub's own layers."""
    import numpy as np

    from tfllm.models.backbone import build_backbone
    from tfllm.models.fused_elementwise import fuse_elementwise
    from tfllm.models.pretraining import BertPretrainer, pretraining_losses
    from tfllm.training.optimizer import build_optimizer

    batch_size, seq, preds = cfg.train.batch_size, info.seq_len, info.max_predictions
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": tf.constant(rng.integers(5, info.vocab_size, (batch_size, seq)), tf.int32),
        "input_mask": tf.ones((batch_size, seq), tf.int32),
        "segment_ids": tf.zeros((batch_size, seq), tf.int32),
        "masked_lm_positions": tf.constant(np.sort(rng.integers(1, seq, (batch_size, preds)), 1),
                                           tf.int32),
        "masked_lm_ids": tf.constant(rng.integers(5, info.vocab_size, (batch_size, preds)),
                                     tf.int32),
        "masked_lm_weights": tf.ones((batch_size, preds)),
    }
    backbone = build_backbone(cfg.model, info.vocab_size, dtype=precision)
    model = BertPretrainer(fuse_elementwise(backbone) if fused else backbone, nsp=False)
    optimizer = build_optimizer(cfg.optimizer, 1000)
    model(batch)
    optimizer.build(model.trainable_variables)

    def loss(b, training):
        return tf.reduce_mean(pretraining_losses(model(b, training=training), b)[0])

    @tf.function
    def grads(b):
        with tf.GradientTape() as tape:
            value = loss(b, True)
        return tape.gradient(value, model.trainable_variables)

    @tf.function
    def step(b):
        optimizer.apply_gradients(zip(grads(b), model.trainable_variables, strict=True))
        return tf.constant(0)

    timings = {}
    for name, fn in [("forward_no_dropout", tf.function(lambda b: loss(b, False))),
                     ("forward", tf.function(lambda b: loss(b, True))),
                     ("forward_backward", grads), ("step", step)]:
        fn(batch)
        started = time.perf_counter()
        for _ in range(repeats):
            out = fn(batch)
        [tf.convert_to_tensor(t).numpy() for t in tf.nest.flatten(out) if t is not None]
        timings[name] = round((time.perf_counter() - started) / repeats * 1000, 1)
    return timings, op_profile(lambda: step(batch).numpy(), profile_steps)


def op_profile(call, steps: int) -> dict[str, float]:
    """Milliseconds per call spent in each TF op type (summed over the threads that run
    ops concurrently, so the total exceeds the step time), from the profiler's XSpace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = Path(tempfile.mkdtemp(prefix="tfllm-bench-profile-"))
    tf.profiler.experimental.start(str(logdir))
    for _ in range(steps):
        call()
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    space.ParseFromString(next(logdir.rglob("*.xplane.pb")).read_bytes())
    shutil.rmtree(logdir, ignore_errors=True)
    by_type: dict[str, float] = {}
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name == "CpuExecutable::ExecuteAsyncOnStream":
                    op_type = "XLA cluster (fused GELU, dropout)"  # its kernels are inside it
                elif "::" in name or ":" not in name:  # executor bookkeeping, not an op
                    continue
                else:
                    op_type = name.rsplit(":", 1)[1]
                by_type[op_type] = by_type.get(op_type, 0.0) + event.duration_ps / 1e9 / steps
    return dict(sorted(by_type.items(), key=lambda kv: -kv[1]))


class KerasHubBaseline:
    """What a Keras user writes: BertMaskedLM + compile + fit, on the same tensors; `rate(n)`
    fits n more steps and returns their samples/s (first batch start to last batch end)."""

    def __init__(self, data_dir: Path, cfg: PretrainConfig, dtype: str = "float32") -> None:
        info = read_data_info(data_dir)
        self.batch_size = cfg.train.batch_size
        self.model = compiled_masked_lm(asdict(cfg.model), info.vocab_size,
                                        cfg.optimizer.learning_rate, dtype)

        def to_keras(batch: dict):
            x = {"token_ids": batch["input_ids"], "segment_ids": batch["segment_ids"],
                 "padding_mask": batch["input_mask"],
                 "mask_positions": batch["masked_lm_positions"]}
            return x, batch["masked_lm_ids"], batch["masked_lm_weights"]

        self.data = load_pretraining_dataset(data_dir, info.seq_len, info.max_predictions,
                                             cfg.train.batch_size).repeat().map(to_keras)
        self.rate(3)  # traces the train function

    def rate(self, steps: int) -> float:
        times = []
        clock = keras.callbacks.LambdaCallback(
            on_train_batch_begin=lambda batch, logs: times.append(time.perf_counter())
            if batch == 0 else None,
            on_train_batch_end=lambda batch, logs: times.append(time.perf_counter())
            if batch == steps - 1 else None)
        self.model.fit(self.data, steps_per_epoch=steps, epochs=1, callbacks=[clock], verbose=0)
        return steps * self.batch_size / (times[1] - times[0])


class Interleaved(keras.callbacks.Callback):
    """At every `every`-th step of `tfllm pretrain`, fits `every` steps of the baseline and
    measures the matmul peak: all three are timed in the same minutes, since this shared
    2-core VM drifts by 10-20% from one minute to the next."""

    def __init__(self, baseline: KerasHubBaseline, peak, every: int) -> None:
        super().__init__()
        self.baseline, self.peak, self.every = baseline, peak, every
        self.baseline_rates: list[float] = []
        self.peaks: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every == 0:
            self.baseline_rates.append(self.baseline.rate(self.every))
            self.peaks.append(self.peak(2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="mini")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--baseline-precision", default="float32",
                        choices=("float32", "mixed_bfloat16"),
                        help="the keras-hub baseline's dtype policy; mixed_bfloat16 times only "
                             "tfllm's bf16 rows against it, in a table of its own")
    args = parser.parse_args()
    same_precision = args.baseline_precision == "mixed_bfloat16"
    work = Path(tempfile.mkdtemp(prefix="tfllm-bench-train-"))
    data = data_root() / "wikitext2"
    corpus = [data / "wiki.valid.tokens", data / "wiki.test.tokens"]
    build_vocab(corpus, work / "vocab", vocab_size=8000, quiet=True)
    build_pretraining_data(corpus, work / "vocab", work / "data",
                           load_config(PretrainDataConfig, None, ["examples.dupe_factor=1"]),
                           quiet=True)
    config_path = REPO / "configs" / "pretrain" / f"{args.size}.yaml"
    common = [f"train.batch_size={args.batch}", f"train.steps={args.steps}",
              f"train.log_every={WINDOW}", f"train.checkpoint_every={args.steps}",
              "train.eval_batches=0"]
    base = load_config(PretrainConfig, config_path, common)
    info = read_data_info(work / "data")

    def flops_at(length: float) -> float:
        return train_flops_per_sample(base.model.num_layers, base.model.hidden_dim,
                                      base.model.intermediate_dim, length,
                                      info.max_predictions, info.vocab_size)

    flops = flops_at(info.seq_len)
    peak32_now, peak16_now = matmul_peak(tf.float32), matmul_peak(tf.bfloat16)
    peak32, peak16 = peak32_now(), peak16_now()

    breakdown, profiles = {}, {}
    for label, precision, fused in [] if same_precision else [
            ("float32, keras-hub layers", "float32", False),
            ("mixed_bfloat16, keras-hub layers", "mixed_bfloat16", False),
            ("mixed_bfloat16, fused", "mixed_bfloat16", True)]:
        breakdown[label], profiles[label] = step_breakdown(base, info, precision, fused)
    print(breakdown, flush=True)
    runs = [(f"tfllm pretrain, MLM only, {label}", overrides) for label, overrides in [
        ("fp32", ["model.nsp=false", "train.jit_compile=false"]),
        ("fp32 + XLA, 10 steps/call", ["model.nsp=false", "train.jit_compile=true",
                                        "train.steps_per_execution=10"]),
        ("mixed_bfloat16, keras-hub GELU and dropout (train.fused_elementwise=false)",
         ["model.nsp=false", "train.precision=mixed_bfloat16", "train.fused_elementwise=false"]),
        ("mixed_bfloat16", ["model.nsp=false", "train.precision=mixed_bfloat16"]),
        ("mixed_bfloat16, length buckets of 32", ["model.nsp=false",
                                                  "train.precision=mixed_bfloat16",
                                                  "train.bucket_width=32"]),
    ]]
    runs.append(("tfllm pretrain, MLM + NSP, fp32", []))
    runs.append(("tfllm pretrain, MLM + NSP, mixed_bfloat16, length buckets of 32",
                 ["train.precision=mixed_bfloat16", "train.bucket_width=32"]))
    if same_precision:
        runs = [(label, overrides) for label, overrides in runs if "bfloat16" in label]
    baseline = KerasHubBaseline(work / "data", base, args.baseline_precision)

    def row(label: str, rate: float, base_rate: float, peak: float, length: float,
            final_loss: float | None) -> dict:
        run_flops = flops_at(length)  # length-bucketed batches are shorter than seq_len
        return {"config": label, "samples_per_second": rate,
                "baseline_samples_per_second": base_rate, "vs_baseline": rate / base_rate,
                "tokens_per_second": rate * info.seq_len, "mean_padded_length": length,
                "flops_per_sample": run_flops, "step_ms": 1000 * args.batch / rate,
                "gflops": rate * run_flops / 1e9, "peak_gflops_fp32_same_minutes": peak,
                "mfu_fp32_peak": rate * run_flops / 1e9 / peak, "final_loss": final_loss}

    results, all_baseline, all_peaks = [], [], []
    for label, overrides in runs:
        cfg = load_config(PretrainConfig, config_path, [*common, *overrides])
        out = Path(tempfile.mkdtemp(dir=work, prefix="run-"))
        paired = Interleaved(baseline, peak32_now, every=WINDOW)
        metrics = pretrain(cfg, work / "data", out, quiet=True, callbacks=[paired])
        shutil.rmtree(out, ignore_errors=True)
        # tfllm's first window (tracing) is not in its samples/s: leave out the baseline's too
        base_windows, peaks = paired.baseline_rates[1:], paired.peaks[1:]
        all_baseline += base_windows
        all_peaks += peaks
        results.append(row(label, metrics["samples_per_second"],
                           statistics.harmonic_mean(base_windows), statistics.median(peaks),
                           metrics["mean_padded_length"], metrics["loss"]))
        results[-1]["baseline_windows"], results[-1]["peak_windows"] = base_windows, peaks
        print(label, {k: results[-1][k] for k in ("samples_per_second", "vs_baseline",
                                                   "mfu_fp32_peak")}, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    pooled = statistics.harmonic_mean(all_baseline)
    results.insert(0, row(f"keras-hub BertMaskedLM.fit (baseline, MLM only, "
                          f"{args.baseline_precision}), all its windows",
                          pooled, pooled, statistics.median(all_peaks), info.seq_len, None))
    table = markdown_table(
        ["config", "samples/s", "baseline samples/s, same minutes", "vs baseline",
         "padded length", "step ms", "GFLOP/s", "fp32 peak, same minutes", "MFU (fp32 peak)",
         "loss, last 10 steps"],
        [[r["config"], f"{r['samples_per_second']:.1f}", f"{r['baseline_samples_per_second']:.1f}",
          f"{r['vs_baseline']:.2f}x", f"{r['mean_padded_length']:.0f}", f"{r['step_ms']:.0f}",
          f"{r['gflops']:.0f}", f"{r['peak_gflops_fp32_same_minutes']:.0f}",
          f"{r['mfu_fp32_peak']:.2f}", "" if r["final_loss"] is None else f"{r['final_loss']:.3f}"]
         for r in results])
    if breakdown:  # not timed for the same-precision table
        ideal_ms = flops * args.batch / (peak32 * 1e9) * 1000
        table += "\n\nWhere a step's time goes (ms, one fixed batch, no NSP):\n\n" + markdown_table(
            ["precision, layers", "forward, no dropout", "forward", "forward + backward", "full step",
             "matmul FLOPs at fp32 peak"],
            [[p, b["forward_no_dropout"], b["forward"], b["forward_backward"], b["step"],
              f"{ideal_ms:.0f}"] for p, b in breakdown.items()])
        top = list(dict.fromkeys(op for prof in profiles.values() for op in list(prof)[:8]))
        table += ("\n\nTF profiler, full step, op time by op type (ms per step, summed over the "
                  "threads running ops at once; share of all op time):\n\n") + markdown_table(
            ["op type", *[f"{p} ms" for p in profiles], *[f"{p} share" for p in profiles]],
            [[op, *[f"{prof.get(op, 0.0):.1f}" for prof in profiles.values()],
              *[f"{prof.get(op, 0.0) / sum(prof.values()):.0%}" for prof in profiles.values()]]
             for op in top])
    notes = (
        f"Model `{args.size}` (L{base.model.num_layers}/H{base.model.hidden_dim}), L={info.seq_len}, "
        f"global batch {args.batch}, {info.max_predictions} masked positions, vocab {info.vocab_size}, "
        f"AdamW, {args.steps} steps per config, the first {WINDOW} excluded (tracing). After every "
        f"{WINDOW} steps of `tfllm pretrain` (a Keras callback), the keras-hub baseline fits "
        f"{WINDOW} steps and "
        "the fp32 matmul peak (2048x2048) is measured, so each ratio and MFU compares numbers "
        "taken in the same minutes: this shared 2-core VM drifts by 10-20% between minutes. "
        f"Peaks at the start: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s. FLOPs per sample "
        f"{flops / 1e9:.2f} GFLOP at L={info.seq_len} (3x forward matmuls incl. attention and the "
        "MLM head at masked positions); with length buckets (`train.bucket_width=32`) batches are "
        "padded only to the next multiple of 32 above their longest row, so GFLOP/s and MFU count "
        "the FLOPs at the mean padded length the run reports (the JSON's tokens/s stays samples/s x L, "
        "as for the baseline). NSP adds a 2-way head on the pooled output (negligible FLOPs). "
        "tfllm rows use `train.fused_elementwise=true` (the default: XLA-fused tanh GELU and "
        "dropout with 16-bit draws, `tfllm/models/fused_elementwise.py`) unless the row says "
        "otherwise; the baseline is keras-hub's own layers. MFU is against the fp32 peak as the "
        f"issue defines it; against the bf16 peak measured at the start ({peak16:.0f} GFLOP/s) "
        f"the best row is {max(r['gflops'] for r in results) / peak16:.2f}."
    )
    name, title = "train", f"Pretraining throughput ({args.size}, L={info.seq_len}, CPU)"
    if same_precision:
        name, title = "train-bf16-baseline", title[:-1] + ", keras-hub baseline in mixed_bfloat16)"
        notes += (" Here the keras-hub baseline itself runs under the `mixed_bfloat16` policy "
                  "(`--baseline-precision mixed_bfloat16`), so each ratio compares like precision.")
    write_results(name, title,
                  {"size": args.size, "seq_len": info.seq_len, "batch": args.batch,
                   "peak_gflops_fp32": peak32, "peak_gflops_bf16": peak16,
                   "flops_per_sample": flops, "results": results,
                   "breakdown_ms": breakdown, "op_profile_ms": profiles},
                  table, notes)
    print(table)


if __name__ == "__main__":
    main()
