"""A continual-learning protocol: the tasks in order, as a user writes them in YAML, and
how they are read into labelled examples.

A task entry names its files and columns like a `tfllm finetune` config does, plus an
optional `labels` subset (class-incremental splits) and `rename` (raw label -> the
head's name, so that SST-2's `0`/`1` and Financial PhraseBank's `negative`/`positive`
share one head). The head's label set is the union of the tasks' labels in order
(it grows when a task brings new ones), or the protocol's fixed `labels`.

Example:

>>> import tempfile, pathlib
>>> from tfllm.continual.protocol import load_protocol, read_task
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "a.tsv").write_text("text\\tlabel\\ngood\\t1\\nbad\\t0\\nfine\\t1\\nawful\\t0\\n")
>>> _ = (folder / "p.yaml").write_text(f'''
... tasks:
...   - {{name: a, train: {folder}/a.tsv, test: {folder}/a.tsv, text_column: text,
...       rename: {{0: negative, 1: positive}}}}
... ''')
>>> protocol = load_protocol(folder / "p.yaml")
>>> [task.name for task in protocol.tasks], protocol.method.name
(['a'], 'naive')
>>> data = read_task(protocol, protocol.tasks[0])
>>> sorted({e.label for e in data.test})
['negative', 'positive']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tfllm.config import ConfigError, load_config
from tfllm.data.readers import ReadReport
from tfllm.data.tasks import Example, expand_path, read_examples, stratified_split
from tfllm.errors import InputError
from tfllm.finetune.train import FinetuneTrainConfig, ModelConfig, subsample

METHODS = ("naive", "replay", "l2sp", "ewc", "adapters", "joint")


@dataclass
class ContinualTask:
    """One task of the sequence: files, columns, and which labels it holds."""

    name: str = ""
    train: str = ""
    test: str = ""  # or none, with test_split
    test_split: float = 0.0  # > 0: a stratified share of train is the test set (never trained)
    format: str | None = None  # csv | tsv | jsonl; None = from the extension
    text_column: str | None = None
    label_column: str | None = "label"
    labels: list[str] | None = None  # keep only rows with these labels (after `rename`)
    rename: dict | None = None  # raw label -> the head's label
    max_train_examples: int | None = None  # seeded, stratified subsample (CPU budgets)
    max_test_examples: int | None = None
    max_len: int = 128
    truncation: str = "head"  # or head_tail (long reviews)


@dataclass
class ContinualMethodConfig:
    """How the model is kept from forgetting (`naive` = not at all; `joint` = all tasks at
    once, the upper bound)."""

    name: str = "naive"
    replay_fraction: float = 0.05  # share of each past task's training rows kept and replayed
    # replay: weight the stored rows' loss so that each old label weighs as much as the
    # stage's average new label (same rows, same compute); against a growing head's new-label bias
    balanced_replay: bool = False
    # after each stage that adds labels, scale the new labels' head rows so their mean norm
    # equals the old labels' (weight aligning, Zhao et al. 2020)
    align_head: bool = False
    # Learning without Forgetting (Li & Hoiem 2016; with replay, as in iCaRL): weight alpha of
    # a soft term that keeps the old labels' logits where the previous stage left them, on
    # every row the stage trains on (its own and the stored ones); 0 = off
    distill_old: float = 0.0
    distill_temperature: float = 2.0
    # penalty weight lambda of l2sp / ewc: lambda/2 * sum_i F_i (theta_i - theta*_i)^2, F
    # normalised to mean 1 so that one scale serves both
    penalty: float = 1.0
    fisher_examples: int = 256  # rows per task for EWC's diagonal Fisher
    adapter_size: int = 64


@dataclass
class ContinualConfig:
    tasks: list[ContinualTask] = field(default_factory=list)
    labels: list[str] | None = None  # a fixed head; None = the union of the tasks' labels
    method: ContinualMethodConfig = field(default_factory=ContinualMethodConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    eval_split: float = 0.1  # per task, held out of train: what the recipe is chosen on
    split_seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)  # size/tokenizer: --init none only


@dataclass
class TaskData:
    train: list[Example]
    eval: list[Example]
    test: list[Example]


def load_protocol(path: str | Path, overrides: list[str] | tuple = ()) -> ContinualConfig:
    """The protocol at `path` (+ `--set` overrides), every task's files checked."""
    cfg = load_config(ContinualConfig, path, overrides)
    if not cfg.tasks:
        raise ConfigError(f"{path}: no tasks")
    if cfg.method.name not in METHODS:
        raise ConfigError(f"method.name must be one of {', '.join(METHODS)}, "
                          f"not {cfg.method.name!r}")
    if not 0 < cfg.method.replay_fraction <= 1:
        raise ConfigError(f"method.replay_fraction must be in (0, 1], "
                          f"got {cfg.method.replay_fraction}")
    if not 0 <= cfg.method.distill_old <= 1 or cfg.method.distill_temperature <= 0:
        raise ConfigError("method.distill_old must be in [0, 1] and method.distill_temperature "
                          f"> 0, got {cfg.method.distill_old} and "
                          f"{cfg.method.distill_temperature}")
    names = [task.name for task in cfg.tasks]
    for i, task in enumerate(cfg.tasks):
        where = f"{path}: tasks[{i}]" + (f" ({task.name})" if task.name else "")
        if not task.name or names.count(task.name) > 1:
            raise ConfigError(f"{where}: every task needs a name of its own")
        if bool(task.test) == (task.test_split > 0):
            raise ConfigError(f"{where}: set test (a file) or test_split (a share of train), "
                              "one of them")
        for role in ("train", "test") if task.test else ("train",):
            value = getattr(task, role)
            if not value:
                raise ConfigError(f"{where}: no {role} file")
            if not Path(expand_path(value)).is_file():
                raise ConfigError(f"{where}: {role} file not found: {expand_path(value)}")
    return cfg


def _relabelled(rows: list[Example], task: ContinualTask) -> list[Example]:
    rename = {str(k): str(v) for k, v in (task.rename or {}).items()}
    rows = [Example(e.text, rename.get(e.label, e.label), e.text_pair, e.source, e.line)
            for e in rows]
    if task.labels is not None:
        keep = set(task.labels)
        rows = [e for e in rows if e.label in keep]
    return rows


def read_task(cfg: ContinualConfig, task: ContinualTask) -> TaskData:
    """Train (subsampled), eval (held out of train) and test rows of one task, relabelled,
    every label checked against the task's `labels` and the protocol's head."""
    columns = dict(text_column=task.text_column, label_column=task.label_column,
                   fmt=task.format)
    report = ReadReport(strict=True)  # a bad labelled row stops the run
    train = _relabelled(read_examples(expand_path(task.train), **columns, report=report), task)
    if task.test:
        test = _relabelled(read_examples(expand_path(task.test), **columns, report=report),
                           task)
    else:
        train, test = stratified_split(train, task.test_split, cfg.split_seed)
    found = sorted({e.label for e in train})
    for label in task.labels or []:
        if label not in found:
            raise InputError(f"task {task.name}: label {label!r} is not in {task.train} "
                             f"(after rename; found {', '.join(found[:8])})")
    if cfg.labels is not None:
        outside = sorted({e.label for e in train + test} - set(cfg.labels))
        if outside:
            raise InputError(f"task {task.name}: label {outside[0]!r} is outside the head "
                             f"({', '.join(cfg.labels)}); set `labels` or `rename` on the task")
    unseen = sorted({e.label for e in test} - set(found))
    if unseen:
        raise InputError(f"task {task.name}: test label {unseen[0]!r} ({task.test}) never "
                         f"occurs in its training rows ({task.train})")
    if len(found) < 2 and cfg.labels is None:
        raise InputError(f"task {task.name}: only one label in {task.train}")
    train, evaluation = stratified_split(train, cfg.eval_split, cfg.split_seed)
    return TaskData(subsample(train, task.max_train_examples, cfg.split_seed), evaluation,
                    subsample(test, task.max_test_examples, cfg.split_seed))


def head_labels(cfg: ContinualConfig, data: list[TaskData]) -> list[list[str]]:
    """The head's label names after each task: the fixed `labels`, or the union so far in
    order of first appearance (task by task, sorted within a task)."""
    if cfg.labels is not None:
        return [list(cfg.labels)] * len(data)
    names: list[str] = []
    grown = []
    for task in data:
        names += [label for label in sorted({e.label for e in task.train}) if label not in names]
        grown.append(list(names))
    return grown
