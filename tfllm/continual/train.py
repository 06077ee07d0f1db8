"""`tfllm continual`: one model carried through a sequence of tasks, with forgetting measured.

Read top to bottom: read every task first (a bad file stops the run before any training)
-> load `--init` -> for each task in order: grow the head when the task brings new labels,
build the training rows (the task's, plus the replay buffer for `replay`), fit (with the
L2/EWC penalty towards the weights the earlier tasks left, for `l2sp`/`ewc`), score every
task's test and eval split (a row of R), write the stage's RUN_DIR, then update the replay
buffer or the Fisher information -> `continual.json` (R, average accuracy, BWT, forgetting,
FWT) and `continual.png` (R as a heatmap), written last.

Methods: `naive` (plain sequential fine-tuning, the lower bound), `replay` (a stratified
`method.replay_fraction` of each past task's training rows joins every later task),
`l2sp` / `ewc` (`tfllm.continual.penalties`), `adapters` (bottleneck adapters + LayerNorms
+ pooler + head train, the pretrained weights stay), `joint` (every task at once, the upper
bound: one stage, one row of R). `method.distill_old` adds Learning without Forgetting to
any sequential method: the previous stage's logits over its labels, on every row a stage
trains on, become soft targets (`tfllm.finetune.distill.DistillationLoss`).

Example:

    tfllm continual --config configs/continual/sentiment.yaml --init "$MINILM" \\
        --out runs/continual-sentiment-replay --method replay
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfllm.atomic import atomic_write_text
from tfllm.continual.penalties import Anchored, fisher_diagonal, normalised
from tfllm.continual.protocol import (
    ContinualConfig,
    ContinualTask,
    TaskData,
    head_labels,
    read_task,
)
from tfllm.continual.scores import continual_scores, save_heatmap
from tfllm.data.tasks import Example, stratified_split
from tfllm.errors import InputError
from tfllm.finetune.distill import DistillationLoss, distillation_targets, first_columns_accuracy
from tfllm.finetune.features import (
    batched,
    classification_features,
    classifier_logits,
    predict_logits,
)
from tfllm.finetune.peft import trainable_count, with_adapters
from tfllm.finetune.train import (
    FinetuneConfig,
    MethodConfig,
    TaskConfig,
    build_classifier,
    load_start,
    scheduled_optimizer,
    score_examples,
    write_run,
)


@dataclass
class Memory:
    """What a method carries from task to task besides the weights."""

    replay: list[tuple[int, Example]] = field(default_factory=list)  # (task index, row)
    fisher: list[np.ndarray] | None = None  # summed over the tasks done (EWC)


def run_continual(cfg: ContinualConfig, init: str, out: str | Path, quiet: bool = False,
                  protocol: str = "") -> dict:
    """Train the tasks in order (or jointly), score R after each stage, write DIR."""
    method = cfg.method.name
    out = Path(out)
    if (out / "continual.json").is_file():
        raise InputError(f"{out} already holds a finished continual run (continual.json); "
                         "choose another --out")

    # 1. Every task read and checked before anything trains.
    data = [read_task(cfg, task) for task in cfg.tasks]
    heads = head_labels(cfg, data)
    stages = [list(range(len(data)))] if method == "joint" else [[i] for i in
                                                                   range(len(data))]

    # 2. The starting model: --init + a head for the first stage's labels.
    checkpoint, tokenizer = load_start(_stage_config(cfg, cfg.tasks[0]), init, out)
    backbone = checkpoint.backbone
    if method == "adapters":
        backbone = with_adapters(backbone, cfg.method.adapter_size)
    model = _grown(None, backbone, heads[stages[0][-1]], cfg.model.dropout)
    baseline = [_accuracy(model, tokenizer, task, rows.test, heads[stages[0][-1]])
                for task, rows in zip(cfg.tasks, data, strict=True)]

    # 3. The stages.
    memory, R, R_eval, stage_dirs, seconds = Memory(), [], [], [], 0.0
    for number, tasks in enumerate(stages):
        names = heads[tasks[-1]]
        model = _grown(model, backbone, names, cfg.model.dropout)
        stage_out = out / "stages" / f"{number + 1:02d}-{'+'.join(cfg.tasks[i].name for i in tasks)}"
        if not quiet:
            print(f"stage {number + 1}/{len(stages)}: {stage_out.name} ({method}, "
                  f"{len(names)} labels)")
        started = time.perf_counter()
        old = len(heads[stages[number - 1][-1]]) if number > 0 else 0
        history = _fit_stage(cfg, model, backbone, tokenizer, data, tasks, names, memory,
                             stage_out, number, old, quiet)
        seconds += time.perf_counter() - started
        if cfg.method.align_head and old:
            _align_head(model, old)
        R.append([_accuracy(model, tokenizer, t, d.test, names)
                  for t, d in zip(cfg.tasks, data, strict=True)])
        R_eval.append([_accuracy(model, tokenizer, t, d.eval, names)
                       for t, d in zip(cfg.tasks, data, strict=True)])
        if not quiet:
            print("  test accuracy: " + ", ".join(
                f"{t.name} {a:.4f}" for t, a in zip(cfg.tasks, R[-1], strict=True)))
        _write_stage(cfg, stage_out, model, backbone, checkpoint.tokenizer_dir, tokenizer,
                     data, tasks, names, history, R[-1], number, init)
        stage_dirs.append(str(stage_out.relative_to(out)))
        if number + 1 < len(stages):
            _remember(cfg, memory, model, backbone, tokenizer, data, tasks)

    # 4. Scores, heatmap, continual.json last (its presence marks a finished run).
    scores = continual_scores(R, baseline)
    eval_scores = continual_scores(R_eval)
    report = {
        "protocol": protocol, "method": method, "init": init, "init_kind": checkpoint.kind,
        "tasks": [t.name for t in cfg.tasks], **scores, "baseline": baseline,
        "R_eval": eval_scores["R"], "average_accuracy_eval": eval_scores["average_accuracy"],
        "labels": heads[-1], "stages": stage_dirs, "replay_rows": len(memory.replay),
        "replayed_share": (len(memory.replay) / sum(len(d.train) for d in data[:-1])
                           if method == "replay" else None), "train_seconds": round(seconds, 1),
        "trainable_params": trainable_count(model), "total_params": int(model.count_params()),
        "config": asdict(cfg),
    }
    save_heatmap(out / "continual.png", R, [t.name for t in cfg.tasks],
                 f"{method}: average accuracy {100 * scores['average_accuracy']:.1f}")
    atomic_write_text(out / "continual.json", json.dumps(report, indent=2) + "\n")
    if not quiet:
        print(f"continual -> {out}: average accuracy {scores['average_accuracy']:.4f}"
              + (f", BWT {scores['bwt']:+.4f}, forgetting {scores['forgetting']:.4f}"
                 if scores["bwt"] is not None else ""))
    return report


def _stage_config(cfg: ContinualConfig, task: ContinualTask) -> FinetuneConfig:
    """The `tfllm finetune` config a stage's RUN_DIR records (export and serve read it)."""
    adapters = cfg.method.name == "adapters"
    return FinetuneConfig(
        task=TaskConfig(train=task.train, test=task.test, format=task.format,
                        text_column=task.text_column, label_column=task.label_column,
                        eval_split=cfg.eval_split, split_seed=cfg.split_seed,
                        max_train_examples=task.max_train_examples, max_len=task.max_len,
                        truncation=task.truncation),
        model=cfg.model, train=cfg.train,
        method=MethodConfig(name="adapter" if adapters else "full",
                            adapter_size=cfg.method.adapter_size))


def _grown(model: Any, backbone: Any, names: list[str], dropout: float) -> Any:
    """A classifier over `names` on `backbone`; the old head's rows copied when it grows."""
    if model is not None and model.output_dense.units == len(names):
        return model
    grown = build_classifier(backbone, len(names), dropout)
    if model is not None:
        kernel, bias = (np.asarray(w) for w in model.output_dense.weights)
        new_kernel, new_bias = (np.asarray(w) for w in grown.output_dense.weights)
        new_kernel[:, :kernel.shape[1]], new_bias[:bias.shape[0]] = kernel, bias
        grown.output_dense.set_weights([new_kernel, new_bias])
    return grown


def _features(tokenizer: Any, groups: list[tuple[ContinualTask, list[Example]]],
              names: list[str]) -> tuple[dict, np.ndarray]:
    """Inputs (each task encoded with its own length and truncation, padded to the widest)
    and one-hot labels over the head."""
    parts = [classification_features(tokenizer, rows, task.max_len, task.truncation)
             for task, rows in groups if rows]
    width = max(part["token_ids"].shape[1] for part in parts)
    x = {key: np.concatenate([np.pad(p[key], ((0, 0), (0, width - p[key].shape[1])))
                              for p in parts]) for key in parts[0]}
    index = {name: i for i, name in enumerate(names)}
    labels = [index[e.label] for _, rows in groups for e in rows]
    return x, np.eye(len(names), dtype="float32")[labels]


def _fit_stage(cfg: ContinualConfig, model: Any, backbone: Any, tokenizer: Any,
               data: list[TaskData], tasks: list[int], names: list[str], memory: Memory,
               out: Path, number: int, old: int, quiet: bool) -> dict:
    """One stage of Keras fit on the stage's tasks (+ replay), eval on their eval splits;
    `old`: the labels the head held before this stage."""
    groups = [(cfg.tasks[i], data[i].train) for i in tasks]
    for past in sorted({i for i, _ in memory.replay}):
        groups.append((cfg.tasks[past], [e for i, e in memory.replay if i == past]))
    x_train, y_train = _features(tokenizer, groups, names)
    if cfg.method.balanced_replay and len(groups) > len(tasks):
        # A scaled one-hot target scales that row's cross-entropy: a per-row loss weight
        # without a sample-weight input (accuracy still reads the argmax).
        y_train *= _balanced_weights(groups[len(tasks):], groups[:len(tasks)])[:, None]
    x_eval, y_eval = _features(tokenizer, [(cfg.tasks[i], data[i].eval) for i in tasks], names)
    train = cfg.train
    optimizer = scheduled_optimizer(train, len(y_train))
    trainer = model
    if number > 0 and cfg.method.name in ("l2sp", "ewc"):
        importance = normalised(memory.fisher) if cfg.method.name == "ewc" else None
        trainer = Anchored(model, backbone.trainable_weights, importance, cfg.method.penalty)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if cfg.method.distill_old and old:
        # Before fitting, the grown head's first `old` columns are the previous stage's head:
        # its logits on this stage's rows are the soft targets, computed once.
        y_train = distillation_targets(y_train, classifier_logits(model, x_train)[:, :old], False)
        y_eval = distillation_targets(y_eval, classifier_logits(model, x_eval)[:, :old], False)
        loss = DistillationLoss(len(names), cfg.method.distill_temperature,
                                cfg.method.distill_old, teacher_classes=old)
        metrics = [first_columns_accuracy(len(names))]
    trainer.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    out.mkdir(parents=True, exist_ok=True)
    history = trainer.fit(
        batched(x_train, y_train, train.batch_size, True, train.seed + number,
                by_length=train.bucket_by_length),
        validation_data=batched(x_eval, y_eval, 64, False, 0), epochs=train.epochs,
        callbacks=[keras.callbacks.TensorBoard(str(out / "logs"))], verbose=0 if quiet else 1)
    return history.history


def _balanced_weights(stored: list[tuple[ContinualTask, list[Example]]],
                      new: list[tuple[ContinualTask, list[Example]]]) -> np.ndarray:
    """A weight per row (new rows first, then the stored ones, as `_features` orders them):
    each old label weighs as much in the loss as the stage's average new label; mean 1."""
    new_rows = [e for _, rows in new for e in rows]
    per_new_label = len(new_rows) / max(1, len({e.label for e in new_rows}))
    old_rows = [e for _, rows in stored for e in rows]
    counts = {label: 0 for label in {e.label for e in old_rows}}
    for e in old_rows:
        counts[e.label] += 1
    weights = np.array([1.0] * len(new_rows)
                       + [per_new_label / counts[e.label] for e in old_rows], "float32")
    return weights / weights.mean()


def _align_head(model: Any, old: int) -> None:
    """Weight aligning: the head's rows for the labels after the first `old` scaled by
    mean old norm / mean new norm (kernel and bias: their logits scale alike)."""
    kernel, bias = (np.asarray(w) for w in model.output_dense.weights)
    if old <= 0 or old >= kernel.shape[1]:
        return
    norms = np.linalg.norm(kernel, axis=0)
    gamma = norms[:old].mean() / norms[old:].mean()
    kernel[:, old:] *= gamma
    bias[old:] *= gamma
    model.output_dense.set_weights([kernel, bias])


def _accuracy(model: Any, tokenizer: Any, task: ContinualTask, rows: list[Example],
              names: list[str]) -> float:
    """Share of rows whose argmax label (over the whole head, no task id) is the gold one;
    a label the head does not hold yet counts as wrong."""
    if not rows:
        return float("nan")
    logits = predict_logits(model, tokenizer, rows, task.max_len, truncation=task.truncation)
    predicted = [names[k] for k in logits.argmax(-1)]
    return float(np.mean([p == e.label for p, e in zip(predicted, rows, strict=True)]))


def _write_stage(cfg: ContinualConfig, out: Path, model: Any, backbone: Any,
                 tokenizer_dir: Path, tokenizer: Any, data: list[TaskData], tasks: list[int],
                 names: list[str], history: dict, row: list[float], number: int,
                 init: str) -> None:
    """The stage's RUN_DIR: a classifier run like `tfllm finetune` writes (it exports and
    serves), scored on its own tasks' eval rows, with the stage's row of R."""
    evaluation = [e for i in tasks for e in data[i].eval]
    stage = _stage_config(cfg, cfg.tasks[tasks[-1]])
    metrics = score_examples(model, tokenizer, evaluation, names, stage.task, quiet=True)
    metrics.update({
        "train_examples": sum(len(data[i].train) for i in tasks),
        "eval_examples": len(evaluation), "epochs_run": len(history["loss"]),
        "history": {k: [round(float(v), 6) for v in vs] for k, vs in history.items()},
        "init": init if number == 0 else "the previous stage",
        "method": cfg.method.name, "trainable_params": trainable_count(model),
        "total_params": int(model.count_params()),
        "continual": {"stage": number + 1, "tasks": [cfg.tasks[i].name for i in tasks],
                      "test_accuracy": dict(zip([t.name for t in cfg.tasks], row,
                                                strict=True))}})
    write_run(out, model, backbone, Path(tokenizer_dir), stage, metrics, names, history)
    model.preprocessor = None  # the saved preset's string preprocessor; training feeds ids


def _remember(cfg: ContinualConfig, memory: Memory, model: Any, backbone: Any,
              tokenizer: Any, data: list[TaskData], tasks: list[int]) -> None:
    """After a stage: keep its replay rows (replay) or add its Fisher information (ewc)."""
    for i in tasks:
        rows = data[i].train
        if cfg.method.name == "replay" and len(rows) > 1:
            fraction = min(cfg.method.replay_fraction, 0.999)
            kept = stratified_split(rows, fraction, cfg.split_seed)[1]
            memory.replay += [(i, e) for e in kept]
        if cfg.method.name == "ewc":
            sample = rows[:cfg.method.fisher_examples]  # rows are already shuffled
            x, _ = _features(tokenizer, [(cfg.tasks[i], sample)],
                             sorted({e.label for e in sample}))
            fisher = fisher_diagonal(model, backbone.trainable_weights, x, cfg.split_seed)
            memory.fisher = fisher if memory.fisher is None else [
                a + b for a, b in zip(memory.fisher, fisher, strict=True)]
