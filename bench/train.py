"""Pretraining throughput: plain keras-hub `BertMaskedLM.fit` vs `tfllm pretrain`, one run.

Same model size, sequence length, batch and data (TFRecords from `tfllm data pretrain`
on WikiText-2), side by side in one process. Like for like: every tfllm row is compared with
the keras-hub baseline under the same dtype policy, timed in the same minutes; MFU divides
by the matmul peak of the dtype the run computes in (bf16 for mixed_bfloat16), measured in
the same minutes. Gains that change the precision or the work (length buckets) get their
own labelled rows.

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
    fits n more steps and returns their samples/s.

    Only steps are timed, as for tfllm: the batches sit in memory (no shuffle buffer to
    refill when each `fit` makes its iterator), and the clock runs from the end of the first
    step to the end of the last, so iterator start-up is outside it."""

    BATCHES = 24  # distinct batches cycled in memory

    def __init__(self, data_dir: Path, cfg: PretrainConfig, dtype: str = "float32") -> None:
        info = read_data_info(data_dir)
        self.batch_size, self.dtype = cfg.train.batch_size, dtype
        self.model = compiled_masked_lm(asdict(cfg.model), info.vocab_size,
                                        cfg.optimizer.learning_rate, dtype)
        batches = list(load_pretraining_dataset(data_dir, info.seq_len, info.max_predictions,
                                                cfg.train.batch_size).take(self.BATCHES))
        stacked = {k: tf.stack([b[k] for b in batches]) for k in batches[0]}

        def to_keras(batch: dict):
            x = {"token_ids": batch["input_ids"], "segment_ids": batch["segment_ids"],
                 "padding_mask": batch["input_mask"],
                 "mask_positions": batch["masked_lm_positions"]}
            return x, batch["masked_lm_ids"], batch["masked_lm_weights"]

        self.data = tf.data.Dataset.from_tensor_slices(stacked).repeat().map(to_keras)
        self.rate(3)  # traces the train function

    def rate(self, steps: int) -> float:
        ends = []
        clock = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
        self.model.fit(self.data, steps_per_epoch=steps + 1, epochs=1, callbacks=[clock],
                       verbose=0)
        return steps * self.batch_size / (ends[-1] - ends[0])


class Interleaved(keras.callbacks.Callback):
    """At every `every`-th step of `tfllm pretrain`, fits `every` steps of each keras-hub
    baseline (float32 and mixed_bfloat16) and measures the matmul peak of the run's dtype:
    all are timed in the same minutes, since this shared 2-core VM drifts by 10-20% from one
    minute to the next."""

    def __init__(self, baselines: dict, peak, every: int) -> None:
        super().__init__()
        self.baselines, self.peak, self.every = baselines, peak, every
        self.baseline_rates: dict[str, list[float]] = {name: [] for name in baselines}
        self.peaks: list[float] = []

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.every == 0:
            for name, baseline in self.baselines.items():
                self.baseline_rates[name].append(baseline.rate(self.every))
            self.peaks.append(self.peak(2))


PRECISIONS = ("float32", "mixed_bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="mini")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
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
    peak_now = {"float32": matmul_peak(tf.float32), "mixed_bfloat16": matmul_peak(tf.bfloat16)}
    peak_start = {precision: now() for precision, now in peak_now.items()}

    breakdown, profiles = {}, {}
    for label, precision, fused in [("float32, keras-hub layers", "float32", False),
                                    ("mixed_bfloat16, keras-hub layers", "mixed_bfloat16", False),
                                    ("mixed_bfloat16, fused", "mixed_bfloat16", True)]:
        breakdown[label], profiles[label] = step_breakdown(base, info, precision, fused)
    print(breakdown, flush=True)
    runs = [  # (label, precision, overrides)
        ("MLM only, float32", "float32", ["model.nsp=false", "train.jit_compile=false"]),
        ("MLM only, float32 + XLA, 10 steps/call", "float32",
         ["model.nsp=false", "train.jit_compile=true", "train.steps_per_execution=10"]),
        ("MLM only, mixed_bfloat16, keras-hub GELU and dropout (train.fused_elementwise=false)",
         "mixed_bfloat16", ["model.nsp=false", "train.fused_elementwise=false"]),
        ("MLM only, mixed_bfloat16", "mixed_bfloat16", ["model.nsp=false"]),
        ("MLM only, mixed_bfloat16, length buckets of 32", "mixed_bfloat16",
         ["model.nsp=false", "train.bucket_width=32"]),
        ("MLM + NSP, float32", "float32", []),
        ("MLM + NSP, mixed_bfloat16, length buckets of 32", "mixed_bfloat16",
         ["train.bucket_width=32"]),
    ]
    baselines = {precision: KerasHubBaseline(work / "data", base, precision)
                 for precision in PRECISIONS}

    results, all_baseline = [], {precision: [] for precision in PRECISIONS}
    for label, precision, overrides in runs:
        cfg = load_config(PretrainConfig, config_path,
                          [*common, f"train.precision={precision}", *overrides])
        out = Path(tempfile.mkdtemp(dir=work, prefix="run-"))
        paired = Interleaved(baselines, peak_now[precision], every=WINDOW)
        metrics = pretrain(cfg, work / "data", out, quiet=True, callbacks=[paired])
        shutil.rmtree(out, ignore_errors=True)
        # tfllm's first window (tracing) is not in its samples/s: leave out the baselines' too
        base_rates = {p: statistics.harmonic_mean(rates[1:])
                      for p, rates in paired.baseline_rates.items()}
        for p, rates in paired.baseline_rates.items():
            all_baseline[p] += rates[1:]
        rate, length = metrics["samples_per_second"], metrics["mean_padded_length"]
        peak = statistics.median(paired.peaks[1:])
        results.append({
            "config": f"tfllm pretrain, {label}", "precision": precision,
            "samples_per_second": rate, "mean_padded_length": length,
            "same_work_as_baseline": length == info.seq_len,
            "baseline_samples_per_second": base_rates[precision],
            "baseline_float32_samples_per_second": base_rates["float32"],
            "vs_baseline_same_precision": rate / base_rates[precision],
            "vs_baseline_float32": rate / base_rates["float32"],
            "tokens_per_second": rate * info.seq_len, "flops_per_sample": flops_at(length),
            "step_ms": 1000 * args.batch / rate, "gflops": rate * flops_at(length) / 1e9,
            "peak_gflops_same_minutes": peak, "peak_dtype": _compute_dtype(precision),
            "mfu": rate * flops_at(length) / 1e9 / peak, "final_loss": metrics["loss"],
            "baseline_windows": paired.baseline_rates, "peak_windows": paired.peaks})
        print(label, {k: results[-1][k] for k in ("samples_per_second",
                                                  "vs_baseline_same_precision", "mfu")},
              flush=True)
    shutil.rmtree(work, ignore_errors=True)
    for i, precision in enumerate(PRECISIONS):  # the baselines lead the table
        pooled = statistics.harmonic_mean(all_baseline[precision])
        dtype = _compute_dtype(precision)
        peak = statistics.median([p for r in results if r["peak_dtype"] == dtype
                                  for p in r["peak_windows"][1:]])
        results.insert(i, {
            "config": "keras-hub BertMaskedLM.fit (baseline, MLM only), all its windows",
            "precision": precision, "samples_per_second": pooled,
            "mean_padded_length": info.seq_len, "same_work_as_baseline": True,
            "baseline_samples_per_second": pooled, "vs_baseline_same_precision": 1.0,
            "tokens_per_second": pooled * info.seq_len, "flops_per_sample": flops,
            "step_ms": 1000 * args.batch / pooled, "gflops": pooled * flops / 1e9,
            "peak_gflops_same_minutes": peak, "peak_dtype": dtype,
            "mfu": pooled * flops / 1e9 / peak, "final_loss": None})
    table, gains = _tables(results, breakdown, profiles, flops, args.batch, peak_start)
    notes = (
        f"Model `{args.size}` (L{base.model.num_layers}/H{base.model.hidden_dim}), L={info.seq_len}, "
        f"global batch {args.batch}, {info.max_predictions} masked positions, vocab {info.vocab_size}, "
        f"AdamW, {args.steps} steps per config, the first {WINDOW} excluded (tracing). After every "
        f"{WINDOW} steps of `tfllm pretrain` (a Keras callback), the keras-hub baseline fits "
        f"{WINDOW} steps under each policy (float32 and mixed_bfloat16) and the matmul peak "
        "(2048x2048) of the run's compute dtype is measured, so every ratio and MFU compares "
        "numbers taken in the same minutes: this shared 2-core VM drifts by 10-20% between "
        "minutes. The baseline's batches sit in memory and only its steps are timed (end of its "
        "first step to end of its last), as tfllm's loop times only its steps. **Like for "
        "like** is the ratio to the baseline under the same dtype policy on the same padded "
        "length; rows that pad less (length buckets) are marked and have no like-for-like ratio. "
        "**MFU** = achieved FLOP/s / the measured matmul peak of the dtype the run computes in "
        "(float32 runs: the fp32 peak; mixed_bfloat16 runs: the bf16 peak), the peak measured "
        "in the same minutes. Peaks at the start: "
        + ", ".join(f"{_compute_dtype(p)} {v:.0f} GFLOP/s" for p, v in peak_start.items())
        + f". FLOPs per sample {flops / 1e9:.2f} GFLOP at L={info.seq_len} (3x forward matmuls "
        "incl. attention and the MLM head at masked positions); length-bucketed batches "
        "(`train.bucket_width=32`) are padded only to the next multiple of 32 above their "
        "longest row, so their GFLOP/s and MFU count the FLOPs at the mean padded length the "
        "run reports (the JSON's tokens/s stays samples/s x L). NSP adds a 2-way head on the "
        "pooled output (negligible FLOPs). tfllm rows use `train.fused_elementwise=true` (the "
        "default: XLA-fused tanh GELU and dropout with 16-bit draws, "
        "`tfllm/models/fused_elementwise.py`) unless the row says otherwise; the baseline is "
        "keras-hub's own layers. The gains table divides each row by the float32 baseline "
        "measured in its own minutes before comparing rows, so the drift between rows cancels."
    )
    write_results("train", f"Pretraining throughput ({args.size}, L={info.seq_len}, CPU)",
                  {"size": args.size, "seq_len": info.seq_len, "batch": args.batch,
                   "peak_gflops_at_start": peak_start, "flops_per_sample": flops,
                   "gains": gains, "results": results, "breakdown_ms": breakdown,
                   "op_profile_ms": profiles},
                  table, notes)
    print(table)


def _compute_dtype(precision: str) -> str:
    return "bfloat16" if precision == "mixed_bfloat16" else "float32"


def _tables(results: list[dict], breakdown: dict, profiles: dict, flops: float, batch: int,
            peak_start: dict) -> tuple[str, list[dict]]:
    """The headline (like for like first, then each gain in its own labelled row), the
    per-config table, the step breakdown and the op profile."""
    def find(config: str) -> dict:
        return next(r for r in results if r["config"] == f"tfllm pretrain, {config}")

    def vs_fp32_base(config: str) -> float:  # drift-free: each row over its own minutes' fp32
        return find(config)["vs_baseline_float32"]

    bf16, fp32 = find("MLM only, mixed_bfloat16"), find("MLM only, float32")
    gains = [
        {"comparison": "**like for like**: tfllm vs keras-hub, both mixed_bfloat16, L=128",
         "ratio": bf16["vs_baseline_same_precision"]},
        {"comparison": "**like for like**: tfllm vs keras-hub, both float32, L=128",
         "ratio": fp32["vs_baseline_same_precision"]},
        {"comparison": "precision gain in tfllm: mixed_bfloat16 / float32 (MLM only, L=128)",
         "ratio": vs_fp32_base("MLM only, mixed_bfloat16") / vs_fp32_base("MLM only, float32")},
        {"comparison": "precision gain in keras-hub: mixed_bfloat16 / float32 baseline",
         "ratio": results[1]["samples_per_second"] / results[0]["samples_per_second"]},
        {"comparison": "fused GELU/dropout gain: tfllm bf16 fused / keras-hub layers",
         "ratio": vs_fp32_base("MLM only, mixed_bfloat16") / vs_fp32_base(
             "MLM only, mixed_bfloat16, keras-hub GELU and dropout "
             "(train.fused_elementwise=false)")},
        {"comparison": "length-bucketing gain: tfllm bf16 buckets of 32 / fixed L=128 "
                       "(pads to ~108: less work)",
         "ratio": vs_fp32_base("MLM only, mixed_bfloat16, length buckets of 32")
         / vs_fp32_base("MLM only, mixed_bfloat16")},
        {"comparison": "all together, different precision and work: tfllm bf16 + buckets vs "
                       "keras-hub float32 at L=128",
         "ratio": vs_fp32_base("MLM only, mixed_bfloat16, length buckets of 32")},
    ]
    table = markdown_table(["comparison (same minutes)", "ratio"],
                           [[g["comparison"], f"{g['ratio']:.2f}x"] for g in gains])
    table += "\n\nEvery config:\n\n" + markdown_table(
        ["config", "precision", "samples/s", "keras-hub same precision, same minutes",
         "like for like", "padded length", "step ms", "GFLOP/s", "peak of its dtype, same minutes",
         "MFU (peak of its dtype)", "loss, last 10 steps"],
        [[r["config"], r["precision"], f"{r['samples_per_second']:.1f}",
          f"{r['baseline_samples_per_second']:.1f}",
          f"{r['vs_baseline_same_precision']:.2f}x" if r["same_work_as_baseline"]
          else f"({r['vs_baseline_same_precision']:.2f}x, less work)",
          f"{r['mean_padded_length']:.0f}", f"{r['step_ms']:.0f}", f"{r['gflops']:.0f}",
          f"{r['peak_gflops_same_minutes']:.0f} ({r['peak_dtype']})", f"{r['mfu']:.2f}",
          "" if r["final_loss"] is None else f"{r['final_loss']:.3f}"] for r in results])
    ideal = {p: flops * batch / (v * 1e9) * 1000 for p, v in peak_start.items()}
    table += "\n\nWhere a step's time goes (ms, one fixed batch, no NSP):\n\n" + markdown_table(
        ["precision, layers", "forward, no dropout", "forward", "forward + backward", "full step",
         "matmul FLOPs at the peak of its dtype"],
        [[p, b["forward_no_dropout"], b["forward"], b["forward_backward"], b["step"],
          f"{ideal['mixed_bfloat16' if 'bfloat16' in p else 'float32']:.0f}"]
         for p, b in breakdown.items()])
    top = list(dict.fromkeys(op for prof in profiles.values() for op in list(prof)[:8]))
    table += ("\n\nTF profiler, full step, op time by op type (ms per step, summed over the "
              "threads running ops at once; share of all op time):\n\n") + markdown_table(
        ["op type", *[f"{p} ms" for p in profiles], *[f"{p} share" for p in profiles]],
        [[op, *[f"{prof.get(op, 0.0):.1f}" for prof in profiles.values()],
          *[f"{prof.get(op, 0.0) / sum(prof.values()):.0%}" for prof in profiles.values()]]
         for op in top])
    return table, gains


if __name__ == "__main__":
    main()
