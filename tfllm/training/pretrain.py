"""`tfllm pretrain`: BERT MLM + NSP through tf.distribute, with its own small train loop.

Keras 3 `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585, see
DESIGN.md), so the step is ours: `strategy.run` over distributed batches inside a
`tf.function`, per-example losses averaged over the global batch, the Keras optimizer's
`apply_gradients` in replica context. Around it, what `fit` would give: a Keras progress
bar, TensorBoard scalars, step checkpoints (`tf.train.CheckpointManager`) that a re-run of
the same command resumes from, and a final evaluation on held-out data.

Continued pretraining (`init`): the backbone, its shape and its vocab come from a checkpoint
(Hugging Face BERT folder, keras-hub preset or RUN_DIR); the MLM head is tied to its token
embedding as always, and starts from the init's own MLM (and NSP) head when the init is a
tfllm pretraining run, fresh otherwise.

Read top to bottom: check inputs -> build under the strategy -> restore -> loop -> save.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml
from tfllm_serving.wordpiece import is_lowercase, load_tokenizer, read_vocab

from tfllm.atomic import atomic_write_text
from tfllm.config import config_to_dict
from tfllm.data.masking import dynamic_masking
from tfllm.data.tfrecords import load_pretraining_dataset, shard_files
from tfllm.errors import InputError
from tfllm.models.backbone import BackboneConfig, build_backbone
from tfllm.models.checkpoints import backbone_shape, init_kind, load_checkpoint
from tfllm.models.fused_elementwise import fuse_elementwise
from tfllm.models.presets import keras_hub_tokenizer, masked_lm
from tfllm.models.pretraining import BertPretrainer, pretraining_losses
from tfllm.models.run_dir import save_run_dir
from tfllm.training.optimizer import OptimizerConfig, build_optimizer
from tfllm.training.strategy import resolve_jit, resolve_precision, resolve_strategy


@dataclass
class PretrainModelConfig(BackboneConfig):
    """Backbone dimensions plus the pretraining heads."""

    size: str = "custom"  # the name of the size, for reports
    nsp: bool = True


@dataclass
class TrainConfig:
    """The loop: `batch_size` is global (split evenly over replicas)."""

    batch_size: int = 32
    steps: int = 1000
    lr_scaling: str = "none"  # none | linear | sqrt, relative to lr_reference_batch_size
    lr_reference_batch_size: int = 256
    strategy: str = "auto"
    precision: str = "auto"  # auto | float32 | mixed_float16 | mixed_bfloat16
    jit_compile: bool | str = "auto"  # auto | true | false
    steps_per_execution: int = 1
    bucket_width: int = 0  # >0: batch similar lengths, pad to the next multiple of this
    fused_elementwise: bool = True  # XLA-fused GELU and dropout (models/fused_elementwise.py)
    seed: int = 42
    log_every: int = 20
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    eval_batches: int = 50


@dataclass
class PretrainConfig:
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class DataInfo:
    """What a pretraining data folder holds (from its stats.json)."""

    path: Path
    seq_len: int
    max_predictions: int
    vocab_size: int
    masked: bool
    nsp: bool
    vocab: list[str]


def read_data_info(path: str | Path, role: str = "--data") -> DataInfo:
    path = Path(path)
    stats_path = path / "stats.json"
    if not path.is_dir():
        raise InputError(f"{role} {path}: no such folder (make it with `tfllm data pretrain`)")
    if not stats_path.is_file() or not shard_files(path):
        raise InputError(f"{role} {path}: no stats.json or pretrain-*.tfrecord shards")
    stats = json.loads(stats_path.read_text())
    vocab = read_vocab(path / "tokenizer" / "vocab.txt")
    if len(vocab) != stats["vocab_size"]:
        raise InputError(f"{role} {path}: stats.json says vocab_size {stats['vocab_size']} "
                         f"but tokenizer/vocab.txt has {len(vocab)} tokens")
    return DataInfo(path, stats["seq_len"], stats["max_predictions_per_seq"], stats["vocab_size"],
                    stats["masking"] == "static", bool(stats["nsp"]), vocab)


def _check_inputs(cfg: PretrainConfig, data: DataInfo, eval_data: DataInfo | None) -> None:
    if data.seq_len > cfg.model.max_sequence_length:
        raise InputError(f"data seq_len {data.seq_len} exceeds model.max_sequence_length "
                         f"{cfg.model.max_sequence_length}")
    if cfg.model.nsp and not data.nsp:
        raise InputError(f"{data.path} was made with --no-nsp: set model.nsp=false")
    if eval_data is not None:
        if eval_data.vocab != data.vocab:
            raise InputError(f"--eval-data {eval_data.path} was made with another vocab "
                             f"({eval_data.vocab_size} tokens) than --data ({data.vocab_size})")
        if eval_data.seq_len != data.seq_len:
            raise InputError(f"--eval-data seq_len {eval_data.seq_len} != --data {data.seq_len}")
    if not 0 <= cfg.train.bucket_width <= data.seq_len:
        raise InputError(f"train.bucket_width must be 0 (off) to seq_len {data.seq_len}, "
                         f"got {cfg.train.bucket_width}")
    if cfg.train.steps < 1:
        raise InputError(f"train.steps must be at least 1, got {cfg.train.steps}")


def pretraining_heads(init: str) -> set[str]:
    """The heads `init` was pretrained with ({"mlm"} or {"mlm", "nsp"}) when it is a tfllm
    pretraining RUN_DIR (its `model.keras` a BertPretrainer); empty for anything else."""
    config = Path(init) / "config.yaml"
    if init_kind(init) != "run_dir" or not config.is_file():
        return set()
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    if "task" in data:  # a fine-tuning run: its head classifies
        return set()
    return {"mlm", "nsp"} if data.get("model", {}).get("nsp") else {"mlm"}


def _init_backbone(init: str, data: DataInfo, out: Path, precision: str):
    checkpoint = load_checkpoint(init, out / "init", dtype=precision)
    vocab = read_vocab(checkpoint.tokenizer_dir / "vocab.txt")
    if vocab != data.vocab:
        raise InputError(
            f"--data {data.path} was made with a vocab of {data.vocab_size} tokens but --init "
            f"{init} has {len(vocab)}" + (" (the same size, other tokens)"
                                         if len(vocab) == data.vocab_size else "")
            + f": make the data with `tfllm data pretrain --tokenizer {init}`")
    return checkpoint.backbone


def _init_head_weights(init: str) -> dict[str, list[np.ndarray]]:
    """The init run's MLM and NSP head weights (not the token embedding the MLM head is tied
    to: that comes with the backbone); empty unless `init` is a pretraining run."""
    if not pretraining_heads(init):
        return {}
    source = keras.saving.load_model(Path(init) / "model.keras", safe_mode=True)
    return {name: [np.asarray(w) for w in _own_weights(getattr(source, name))]
            for name in ("mlm_head", "nsp_head") if getattr(source, name, None) is not None}


def _own_weights(head: keras.layers.Layer) -> list:
    return [w for w in head.weights if "token_embedding" not in w.path]


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def _dataset_fn(data: DataInfo, batch: int, cfg: PretrainConfig, skip_steps: int, training: bool):
    """Per-input-pipeline dataset: deterministic order, so a resume can skip to its position."""
    special = [i for i, t in enumerate(data.vocab) if t.startswith("[") and t.endswith("]")]
    mask = None if data.masked else dynamic_masking(
        len(data.vocab), data.vocab.index("[MASK]"), special, data.max_predictions)

    def make(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = ctx.get_per_replica_batch_size(batch) if ctx else batch
        ds = load_pretraining_dataset(data.path, data.seq_len, data.max_predictions, per_replica,
                                      masked=data.masked, shuffle=training, seed=cfg.train.seed,
                                      input_context=ctx,
                                      bucket_width=cfg.train.bucket_width if training else 0)
        if training:
            ds = ds.repeat()
            replicas_here = ctx.num_replicas_in_sync // ctx.num_input_pipelines if ctx else 1
            ds = ds.skip(skip_steps * replicas_here)
        return ds.map(mask) if mask is not None else ds

    return make


def _model_inputs(data: DataInfo, batch: int) -> dict:
    return {
        "input_ids": np.zeros((batch, data.seq_len), "int32"),
        "input_mask": np.ones((batch, data.seq_len), "int32"),
        "segment_ids": np.zeros((batch, data.seq_len), "int32"),
        "masked_lm_positions": np.zeros((batch, data.max_predictions), "int32"),
    }


def _summaries(totals: dict) -> dict:
    """Ratios from summed counts (so they are exact over replicas and steps)."""
    out = {}
    if totals.get("mlm_count"):
        out["mlm_loss"] = totals["mlm_loss_sum"] / totals["mlm_count"]
        out["mlm_accuracy"] = totals["mlm_correct"] / totals["mlm_count"]
        out["mlm_perplexity"] = math.exp(min(out["mlm_loss"], 50.0))
    if totals.get("nsp_count"):
        out["nsp_loss"] = totals["nsp_loss_sum"] / totals["nsp_count"]
        out["nsp_accuracy"] = totals["nsp_correct"] / totals["nsp_count"]
    return out


def pretrain(
    cfg: PretrainConfig,
    data_dir: str | Path,
    out: str | Path,
    eval_dir: str | Path | None = None,
    quiet: bool = False,
    callbacks: list[keras.callbacks.Callback] | None = None,
    init: str | None = None,
) -> dict:
    """Train, checkpointing as it goes; resume when `out` holds an unfinished run. With
    `init`, continue from that checkpoint (`cfg.model`'s shape is taken from it).

    `callbacks` get Keras' `on_train_begin`, `on_train_batch_end(step, logs)` after every
    call of the step function (`steps_per_execution` steps, as in `fit`) and `on_train_end`;
    the time they take is left out of `samples_per_second`.
    """
    data = read_data_info(data_dir)
    eval_data = read_data_info(eval_dir, "--eval-data") if eval_dir else None
    if init:  # the shape is the init's (dropout too: the backbone is loaded as it is)
        cfg = replace(cfg, model=replace(cfg.model, **backbone_shape(init)))
    _check_inputs(cfg, data, eval_data)
    strategy = resolve_strategy(cfg.train.strategy)
    replicas = strategy.num_replicas_in_sync
    if cfg.train.batch_size % replicas:
        raise InputError(f"train.batch_size {cfg.train.batch_size} is not divisible by the "
                         f"{replicas} replicas of {type(strategy).__name__}")
    precision = resolve_precision(cfg.train.precision)
    jit = resolve_jit(cfg.train.jit_compile)

    out = Path(out)
    chief = _is_chief(strategy)
    if not chief:  # workers other than the chief keep their own copy, never the chief's files
        out = out / f"worker-{strategy.cluster_resolver.task_id}"
    if (out / "metrics.json").is_file():
        raise InputError(f"{out} already holds a finished run (metrics.json); choose another --out")
    checkpoint_dir, log_dir = out / "checkpoints", out / "logs"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    run_config = checkpoint_dir / "run_config.json"
    wanted = json.dumps({"config": config_to_dict(cfg), "data": str(data.path), "init": init},
                        sort_keys=True)
    if run_config.is_file() and run_config.read_text() != wanted:
        raise InputError(f"{out} holds an unfinished run with another config or data; "
                         f"use the same command to resume, or another --out")
    atomic_write_text(run_config, wanted)

    keras.utils.set_random_seed(cfg.train.seed)
    lr = cfg.optimizer.learning_rate
    if cfg.train.lr_scaling != "none":
        ratio = cfg.train.batch_size / cfg.train.lr_reference_batch_size
        lr *= {"linear": ratio, "sqrt": math.sqrt(ratio)}[cfg.train.lr_scaling]
    opt_cfg = OptimizerConfig(**{**config_to_dict(cfg.optimizer), "learning_rate": lr})
    heads = _init_head_weights(init) if init else {}  # read outside the scope: plain arrays
    with strategy.scope():
        backbone = (_init_backbone(init, data, out, precision) if init
                     else build_backbone(cfg.model, data.vocab_size, dtype=precision))
        if cfg.train.fused_elementwise:
            fuse_elementwise(backbone)
        model = BertPretrainer(backbone, nsp=cfg.model.nsp)
        model(_model_inputs(data, 1))
        for name, values in heads.items():
            if getattr(model, name, None) is not None:
                for variable, value in zip(_own_weights(getattr(model, name)), values,
                                           strict=True):
                    variable.assign(value)
        optimizer = build_optimizer(opt_cfg, cfg.train.steps,
                                    loss_scale=precision == "mixed_float16")
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir,
                                         max_to_keep=cfg.train.keep_checkpoints)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        if not quiet:
            print(f"resumed from {manager.latest_checkpoint} at step {int(step)}")
    start = int(step.numpy())

    global_batch = cfg.train.batch_size
    dist_data = strategy.distribute_datasets_from_function(
        _dataset_fn(data, global_batch, cfg, start, training=True))
    iterator = iter(dist_data)

    def replica_step(batch: dict) -> tuple[dict, list]:
        with tf.GradientTape() as tape:
            outputs = model(batch, training=True)
            per_example, counts = pretraining_losses(outputs, batch)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        stats = {"loss": loss, **counts,
                 "padded_tokens": tf.cast(tf.size(batch["input_ids"]), tf.float32)}
        if replicas > 1:  # applied once for all replicas, in one_step
            return stats, [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices -> dense
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return stats, []

    replica_fn = tf.function(replica_step, jit_compile=True) if jit else replica_step

    def one_step(iterator) -> dict:
        stats, grads = strategy.run(replica_fn, args=(next(iterator),))
        if grads:
            # Keras applies in replica context by a merge_call, which fails inside the cond of
            # its gradient accumulation, and clips each replica's partial gradient, so N
            # replicas would not match one: the summed gradient is applied once, here.
            pairs = [(g, v.value) for g, v in zip(grads, model.trainable_variables, strict=True)]
            total = strategy.extended.batch_reduce_to(tf.distribute.ReduceOp.SUM, pairs)
            optimizer.apply_gradients(zip(total, model.trainable_variables, strict=True))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in stats.items()}

    @tf.function
    def train_steps(iterator, n: tf.Tensor) -> dict:
        # Several steps per call (steps_per_execution) to keep Python out of the loop.
        totals = one_step(iterator)
        for _ in tf.range(n - 1):
            totals = {k: v + w for (k, v), w in zip(totals.items(), one_step(iterator).values(),
                                                    strict=True)}
        return totals

    writer = tf.summary.create_file_writer(str(log_dir / "train")) if chief else None
    progbar = keras.utils.Progbar(cfg.train.steps, stateful_metrics=[
        "loss", "mlm_acc", "nsp_acc", "lr", "samples/s"], verbose=0 if quiet else 1)
    progbar.update(start)
    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    hooks.on_train_begin()
    window: dict[str, float] = {}
    window_steps, window_start = 0, time.perf_counter()
    train_seconds, trained_steps, last_loss = 0.0, 0, float("nan")
    padded_tokens = 0.0
    first_window, first_window_rate = True, None  # the first window includes tracing time
    current = start
    while current < cfg.train.steps:
        n = min(cfg.train.steps_per_execution, cfg.train.steps - current,
                cfg.train.log_every - current % cfg.train.log_every)
        totals = train_steps(iterator, tf.constant(n))
        current += n
        step.assign(current)
        totals = {key: float(value) for key, value in totals.items()}
        for key, value in totals.items():
            window[key] = window.get(key, 0.0) + value
        window_steps += n
        padded_tokens += totals["padded_tokens"]
        if callbacks:
            hooks_started = time.perf_counter()
            hooks.on_train_batch_end(current - 1, {"loss": totals["loss"] / n})
            window_start += time.perf_counter() - hooks_started
        at_log = current % cfg.train.log_every == 0 or current == cfg.train.steps
        if at_log:
            elapsed = time.perf_counter() - window_start
            summary = _summaries(window)
            last_loss = window["loss"] / window_steps
            samples_per_second = window_steps * global_batch / elapsed
            if first_window:
                first_window, first_window_rate = False, samples_per_second
            else:
                train_seconds += elapsed
                trained_steps += window_steps
            learning_rate = float(optimizer.learning_rate.numpy()) if hasattr(
                optimizer.learning_rate, "numpy") else float(optimizer.learning_rate)
            if writer is not None:
                with writer.as_default(step=current):
                    tf.summary.scalar("loss", last_loss)
                    for key, value in summary.items():
                        tf.summary.scalar(key, value)
                    tf.summary.scalar("learning_rate", learning_rate)
                    tf.summary.scalar("samples_per_second", samples_per_second)
                    tf.summary.scalar("tokens_per_second", samples_per_second * data.seq_len)
            progbar.update(current, [("loss", last_loss),
                                     ("mlm_acc", summary.get("mlm_accuracy", 0.0)),
                                     ("nsp_acc", summary.get("nsp_accuracy", 0.0)),
                                     ("lr", learning_rate), ("samples/s", samples_per_second)])
            window, window_steps, window_start = {}, 0, time.perf_counter()
        if current % cfg.train.checkpoint_every == 0 or current == cfg.train.steps:
            manager.save(checkpoint_number=current)

    metrics = {"steps": current, "loss": last_loss,
               "samples_per_second": (trained_steps * global_batch / train_seconds
                                      if train_seconds else first_window_rate),
               # the length batches were padded to: below seq_len with train.bucket_width
               "mean_padded_length": (padded_tokens / ((current - start) * global_batch)
                                      if current > start else None),
               "replicas": replicas, "strategy": type(strategy).__name__,
               "precision": precision, "jit_compile": jit,
               "fused_elementwise": cfg.train.fused_elementwise, "init": init}
    if eval_data is not None:
        metrics.update(evaluate(model, eval_data, cfg, strategy))
        metrics["unigram_mlm_accuracy"] = unigram_accuracy(data, eval_data, cfg)
        if writer is not None:
            with writer.as_default(step=current):
                for key in ("mlm_accuracy", "nsp_accuracy", "mlm_perplexity"):
                    if key in metrics:
                        tf.summary.scalar(f"eval_{key}", metrics[key])
    if writer is not None:
        writer.flush()
    hooks.on_train_end(metrics)
    tokenizer = keras_hub_tokenizer(read_vocab(data.path / "tokenizer" / "vocab.txt"),
                                    is_lowercase(load_tokenizer(data.path / "tokenizer")))
    with strategy.scope():
        preset = masked_lm(model, tokenizer, data.seq_len, data.max_predictions)
    save_run_dir(out, model, backbone, data.path / "tokenizer", cfg, metrics, task=preset)
    if not quiet:
        print("pretrain ->", out)
        for key, value in metrics.items():
            print(f"  {key:24s} {value}")
    return metrics


def evaluate(model: keras.Model, data: DataInfo, cfg: PretrainConfig,
             strategy: tf.distribute.Strategy | None = None) -> dict:
    """Held-out MLM accuracy/perplexity and NSP accuracy over `eval_batches` batches."""
    strategy = strategy or tf.distribute.get_strategy()
    dist = strategy.distribute_datasets_from_function(
        _dataset_fn(data, cfg.train.batch_size, cfg, 0, training=False))

    @tf.function
    def eval_step(batch: dict) -> dict:
        def replica(b):
            return pretraining_losses(model(b, training=False), b)[1]

        per_replica = strategy.run(replica, args=(batch,))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()}

    totals: dict[str, float] = {}
    for index, batch in enumerate(dist):
        if index >= cfg.train.eval_batches:
            break
        for key, value in eval_step(batch).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    summary = _summaries(totals)
    return {k: summary[k] for k in ("mlm_accuracy", "mlm_perplexity", "nsp_accuracy", "mlm_loss")
            if k in summary}


def unigram_accuracy(train: DataInfo, held_out: DataInfo, cfg: PretrainConfig) -> float:
    """MLM accuracy of always predicting the most frequent masked token of the training data:
    the baseline a model must beat to have learned anything beyond token frequencies."""
    def labels(info: DataInfo, batches: int) -> np.ndarray:
        ds = _dataset_fn(info, cfg.train.batch_size, cfg, 0, training=False)(None)
        found = []
        for batch in ds.take(batches):
            weights = batch["masked_lm_weights"].numpy() > 0
            found.append(batch["masked_lm_ids"].numpy()[weights])
        return np.concatenate(found) if found else np.zeros(0, "int64")

    train_labels = labels(train, 200)
    if train_labels.size == 0:
        return 0.0
    most_common = np.bincount(train_labels).argmax()
    held = labels(held_out, cfg.train.eval_batches)
    return float((held == most_common).mean()) if held.size else 0.0
