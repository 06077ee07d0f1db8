"""`tfllm prune`: a smaller model from a fine-tuned run, then recovery fine-tuning.

Read top to bottom: load the run and its training data -> score every feed-forward neuron
and attention head by first-order Taylor importance (Molchanov et al. 2019: per batch of
training data, the squared sum of gradient x weight over the group's weights, summed over
batches) and every layer by the loss of the model with that layer left out -> keep the best,
the same count in every layer, so the result is an ordinary `BertBackbone` (a
`BertVariantBackbone` when heads go: keras-hub ties head size to hidden / heads) ->
optionally zero the smallest weights (`sparsity`) -> write that backbone as an init
(`OUT/pruned_init/`) and score it -> `tfllm finetune` from it on the run's own data and
recipe, distilling from the unpruned run with `distill` -> OUT is a RUN_DIR like any other,
plus `pruning.json`.

Example:

    tfllm prune --model runs/sst2 --out runs/sst2-pruned --ffn-keep 0.5 --heads-keep 8 --distill
    tfllm prune --model runs/sst2 --out runs/sst2-3l --layers 3 --distill --set train.epochs=3
    tfllm prune --model runs/sst2 --out runs/sst2-s80 --sparsity 0.8
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from tfllm_serving.wordpiece import load_tokenizer

from tfllm.atomic import atomic_write_text
from tfllm.compression.sparsity import magnitude_prune
from tfllm.config import load_config
from tfllm.errors import InputError
from tfllm.finetune.features import batched
from tfllm.finetune.tagging import IGNORE
from tfllm.finetune.train import (
    FinetuneConfig,
    build_classifier,
    encode_examples,
    finetune,
    score_examples,
    task_data,
)
from tfllm.models.encoder import BertVariantBackbone, projections
from tfllm.models.run_dir import load_run_model, save_init
from tfllm.models.tagger import build_token_classifier


@dataclass
class PruneConfig:
    """What to keep; `None` keeps all heads / layers."""

    ffn_keep: float = 1.0  # share of feed-forward neurons kept in every layer
    heads_keep: int | None = None  # attention heads kept in every layer
    layers: int | None = None  # encoder layers kept
    sparsity: float = 0.0  # then: share of each encoder matrix zeroed by magnitude
    distill: bool = False  # recovery learns from the unpruned run's logits too
    importance_examples: int = 1024  # training rows the importance is measured on
    batch_size: int = 32


@dataclass
class Shape:
    """Which layers, and in each kept layer which heads and neurons, survive."""

    layers: list[int]
    heads: list[list[int]]
    neurons: list[list[int]]


def prune(run_dir: str | Path, out: str | Path, cfg: PruneConfig,
          overrides: list[str] | tuple = (), quiet: bool = False) -> dict:
    """Prune `run_dir` into `out` and fine-tune it back (`overrides`: `--set` on the run's
    config, for recovery); returns the recovered run's metrics.json."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "metrics.json").is_file() or not (run_dir / "model.keras").is_file():
        raise InputError(f"--model {run_dir}: not a finished fine-tuning RUN_DIR")
    if (out / "metrics.json").is_file():
        raise InputError(f"{out} already holds a finished run (metrics.json); choose another --out")
    # recovery trains every weight left (the run's freeze / LoRA / adapter setting would
    # leave the cut encoder as it is) unless --set says otherwise
    finetune_cfg = load_config(FinetuneConfig, run_dir / "config.yaml",
                               ["method.name=full", *overrides])
    if finetune_cfg.task.type == "embedding":
        raise InputError(f"--model {run_dir}: prune is for classification and NER runs")
    if cfg.distill and finetune_cfg.train.class_weights:
        raise InputError("--distill does not combine with the run's train.class_weights")
    init = out / "pruned_init"
    done = init / "pruning.json"
    if done.is_file():  # an interrupted prune resumes its recovery, if asked the same
        if json.loads(done.read_text())["config"] != asdict(cfg):
            raise InputError(f"{out} holds a pruning with other settings "
                             f"({done}); use the same flags to resume, or another --out")
    else:
        report = _prune_to_init(run_dir, init, cfg, finetune_cfg, quiet)
        atomic_write_text(done, json.dumps(report, indent=2) + "\n")
    if cfg.distill:
        finetune_cfg.method.distill_from = str(run_dir)
    # zeros of this pruning or of an already sparse run (its config says so) stay zero
    finetune_cfg.method.keep_sparsity = cfg.sparsity > 0 or finetune_cfg.method.keep_sparsity
    # the report goes beside metrics.json first: metrics.json (written last) marks the end
    atomic_write_text(out / "pruning.json", done.read_text())
    return finetune(finetune_cfg, str(init), out, quiet=quiet)


def _prune_to_init(run_dir: Path, init: Path, cfg: PruneConfig, finetune_cfg: FinetuneConfig,
                   quiet: bool) -> dict:
    model = load_run_model(run_dir)
    backbone = _backbone(model)
    tagging = finetune_cfg.task.type == "token_classification"
    names = json.loads((run_dir / "labels.json").read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    _check(cfg, backbone)

    # 1. Importance on the run's own training rows (a seeded sample).
    train, evaluation, _, _ = task_data(finetune_cfg)
    rows = np.random.default_rng(finetune_cfg.train.seed).permutation(len(train))
    sample = [train[i] for i in sorted(rows[:cfg.importance_examples])]
    index = {name: i for i, name in enumerate(names)}
    x, y = encode_examples(tokenizer, sample, finetune_cfg.task, index)
    batches = list(batched(x, y, cfg.batch_size, False, 0))
    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=IGNORE if tagging else None)
    heads, neurons = taylor_importance(model, backbone, batches, loss)
    layers = _layers_to_keep(model, backbone, batches, loss, cfg.layers, tagging, quiet)

    # 2. The same count kept in every layer: the most important of each.
    n_heads = cfg.heads_keep or heads.shape[1]
    n_neurons = max(1, int(round(cfg.ffn_keep * neurons.shape[1])))
    shape = Shape(layers,
                  [sorted(np.argsort(-heads[i])[:n_heads].tolist()) for i in layers],
                  [sorted(np.argsort(-neurons[i])[:n_neurons].tolist()) for i in layers])
    small = slice_backbone(backbone, shape)
    zero_share = magnitude_prune(small, cfg.sparsity) if cfg.sparsity else 0.0

    # 3. How much the cut costs before recovery, on the run's eval rows (the original head).
    pruned_model = with_head(model, small, tagging)
    before = score_examples(pruned_model, tokenizer, evaluation, names, finetune_cfg.task,
                            quiet=True)
    key = "entity_f1" if tagging else "accuracy"
    save_init(init, small, run_dir / "tokenizer")
    report = {
        "from": str(run_dir), "config": asdict(cfg),
        "importance": "first-order Taylor (sum of gradient x weight per head / neuron, "
                      f"squared, summed over batches) on {len(sample)} training rows; layers: "
                      "loss with the layer left out",
        "kept": asdict(shape), "encoder_zero_share": round(zero_share, 4),
        "params": {"before": int(backbone.count_params()), "after": int(small.count_params())},
        "macs_at_128": {"before": encoder_macs(backbone, 128), "after": encoder_macs(small, 128)},
        f"eval_{key}_before_recovery": before[key],
    }
    if not quiet:
        print(f"pruned: {report['params']['before']:,} -> {report['params']['after']:,} params, "
              f"MACs at L=128 x{report['macs_at_128']['after'] / report['macs_at_128']['before']:.2f}"
              f", eval {key} before recovery {before[key]:.4f}")
    return report


def _check(cfg: PruneConfig, backbone: Any) -> None:
    if getattr(backbone, "adapter_size", 0):
        raise InputError("--model is an adapter run: prune a fully fine-tuned run (its "
                         "adapters would be cut away)")
    if cfg.importance_examples < 1 or cfg.batch_size < 1:
        raise InputError("--importance-examples and the batch size must be at least 1")
    num_heads = backbone.transformer_layers[0]._self_attention_layer._num_heads
    if not 0 < cfg.ffn_keep <= 1:
        raise InputError(f"--ffn-keep must be in (0, 1], got {cfg.ffn_keep}")
    if cfg.heads_keep is not None and not 1 <= cfg.heads_keep <= num_heads:
        raise InputError(f"--heads-keep must be in 1..{num_heads} (the run's heads per layer), "
                         f"got {cfg.heads_keep}")
    if cfg.layers is not None and not 1 <= cfg.layers <= len(backbone.transformer_layers):
        raise InputError(f"--layers must be in 1..{len(backbone.transformer_layers)}, "
                         f"got {cfg.layers}")
    if not 0 <= cfg.sparsity < 1:
        raise InputError(f"--sparsity must be in [0, 1), got {cfg.sparsity}")


def taylor_importance(model: Any, backbone: Any, batches: list, loss: Any,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """[layers, heads] and [layers, neurons] importance: per batch, (sum over the group's
    weights of gradient x weight)^2 -- the first-order change of the loss when the group is
    removed -- summed over batches."""
    layers = backbone.transformer_layers
    variables = [w for layer in layers for dense in projections(layer)
                 for w in (dense.kernel, dense.bias)]
    heads = np.zeros((len(layers), projections(layers[0])[0].kernel.shape[1]))
    neurons = np.zeros((len(layers), projections(layers[0])[4].kernel.shape[1]))
    for x, y in batches:
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=False))
        grads = tape.gradient(value, variables)
        gw = [np.asarray(g) * np.asarray(w) for g, w in zip(grads, variables, strict=True)]
        for i in range(len(layers)):
            q, qb, k, kb, v, vb, o, _, inner, inner_b, outer, _ = gw[12 * i:12 * i + 12]
            # kernels: q/k/v [hidden, heads, head_dim], o [heads, head_dim, hidden]
            head = (q.sum((0, 2)) + qb.sum(1) + k.sum((0, 2)) + kb.sum(1) + v.sum((0, 2))
                    + vb.sum(1) + o.sum((1, 2)))
            heads[i] += head ** 2
            neurons[i] += (inner.sum(0) + inner_b + outer.sum(1)) ** 2
    return heads, neurons


def _layers_to_keep(model: Any, backbone: Any, batches: list, loss: Any, keep: int | None,
                    tagging: bool, quiet: bool) -> list[int]:
    """The `keep` layers whose removal raises the training loss most (all when None)."""
    count = len(backbone.transformer_layers)
    if keep is None or keep == count:
        return list(range(count))

    def mean_loss(candidate: Any) -> float:
        return float(np.mean([loss(y, candidate(x, training=False)) for x, y in batches]))

    full = mean_loss(model)
    rise = []
    for i in range(count):
        layers = [j for j in range(count) if j != i]
        shape = Shape(layers, [_all_heads(backbone)] * len(layers),
                      [_all_neurons(backbone)] * len(layers))
        rise.append(mean_loss(with_head(model, slice_backbone(backbone, shape), tagging)) - full)
        if not quiet:
            print(f"layer {i}: training loss +{rise[-1]:.4f} without it")
    return sorted(np.argsort(rise)[::-1][:keep].tolist())


def _all_heads(backbone: Any) -> list[int]:
    return list(range(projections(backbone.transformer_layers[0])[0].kernel.shape[1]))


def _all_neurons(backbone: Any) -> list[int]:
    return list(range(projections(backbone.transformer_layers[0])[4].kernel.shape[1]))


def slice_backbone(backbone: Any, shape: Shape) -> Any:
    """A new backbone holding only `shape`'s layers, heads and neurons of `backbone`."""
    attention = backbone.transformer_layers[0]._self_attention_layer
    num_heads, head_dim = len(shape.heads[0]), attention._key_dim
    sizes = dict(vocabulary_size=backbone.vocabulary_size, num_layers=len(shape.layers),
                 num_heads=num_heads, hidden_dim=backbone.hidden_dim,
                 intermediate_dim=len(shape.neurons[0]), dropout=backbone.dropout,
                 max_sequence_length=backbone.max_sequence_length,
                 num_segments=backbone.num_segments, dtype=backbone.dtype_policy)
    if num_heads * head_dim == backbone.hidden_dim:
        small = keras_hub.models.BertBackbone(**sizes)
    else:
        small = BertVariantBackbone(head_dim=head_dim, **sizes)
    for name in ("token_embedding", "position_embedding", "segment_embedding",
                 "embeddings_layer_norm", "pooled_dense"):
        getattr(small, name).set_weights(getattr(backbone, name).get_weights())
    for new, i, heads, neurons in zip(small.transformer_layers, shape.layers, shape.heads,
                                      shape.neurons, strict=True):
        old = backbone.transformer_layers[i]
        for norm in ("_self_attention_layer_norm", "_feedforward_layer_norm"):
            getattr(new, norm).set_weights(getattr(old, norm).get_weights())
        q, k, v, o, inner, outer = projections(old)
        weights = [np.asarray(w) for w in (q.kernel, q.bias, k.kernel, k.bias, v.kernel, v.bias)]
        sliced = [w[:, heads] if w.ndim == 3 else w[heads] for w in weights]
        sliced += [np.asarray(o.kernel)[heads], np.asarray(o.bias),
                   np.asarray(inner.kernel)[:, neurons], np.asarray(inner.bias)[neurons],
                   np.asarray(outer.kernel)[neurons], np.asarray(outer.bias)]
        for dense, (kernel, bias) in zip(projections(new), zip(sliced[::2], sliced[1::2],
                                                                strict=True), strict=True):
            dense.kernel.assign(kernel)
            dense.bias.assign(bias)
    return small


def with_head(model: Any, backbone: Any, tagging: bool) -> Any:
    """`model`'s head (classifier or tagger, its weights copied) on another backbone."""
    if tagging:
        new = build_token_classifier(backbone, model.output_shape[-1])
    else:
        new = build_classifier(backbone, model.num_classes, model.dropout)
    old_layers = {layer.name: layer for layer in model.layers if layer is not _backbone(model)}
    for layer in new.layers:
        if layer is not backbone and layer.weights:
            layer.set_weights(old_layers[layer.name].get_weights())
    return new


def _backbone(model: Any) -> Any:
    return getattr(model, "backbone", None) or next(
        layer for layer in model.layers if isinstance(layer, keras_hub.models.BertBackbone))


def encoder_macs(backbone: Any, seq_len: int) -> int:
    """Multiply-accumulates of the encoder layers and pooler for one sequence of `seq_len`
    tokens (projections, attention scores and context, feed-forward; the embedding lookups
    and the task head are left out)."""
    total = backbone.hidden_dim ** 2  # pooler, on the [CLS] row
    for layer in backbone.transformer_layers:
        q, _, _, _, inner, _ = projections(layer)
        hidden, width = q.kernel.shape[0], q.kernel.shape[1] * q.kernel.shape[2]
        ffn = inner.kernel.shape[1]
        total += seq_len * (4 * hidden * width + 2 * hidden * ffn) + 2 * seq_len ** 2 * width
    return int(total)
