"""The regression gate of `tfllm export --regression-data FILE`: a new version of a classifier
is refused when its accuracy on FILE falls more than `max_drop_pts` below the version it would
replace (the highest finished version already in REPO/NAME), so a model retrained on
feedback cannot ship having forgotten the old data.

The new model is scored in Keras (the parity gate then holds its artifacts to it), the
served version with its own ONNX artifact through the server's runtime; both read FILE with
the new run's columns. It runs before anything is written: a refused version leaves no folder
for a polling server to pick up.

Example:

    check = regression_check("runs/sst2-v2", Path("repo/sst2/2"), "data/old_test.tsv")
    check["passed"], check["new_accuracy"], check["previous_accuracy"]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfllm.errors import InputError


def previous_version(target: Path) -> Path | None:
    """The highest finished version (model_config.json written) below `target`'s number."""
    below = [int(p.name) for p in target.parent.glob("*") if p.name.isdigit()
             and int(p.name) < int(target.name) and (p / "model_config.json").is_file()]
    return target.parent / str(max(below)) if below else None


def regression_check(run_dir: str | Path, target: Path, data: str | Path,
                     max_drop_pts: float = 0.5) -> dict:
    """{"passed", "new_accuracy", "previous_accuracy", "previous_version", "data",
    "examples", "max_drop_pts"}; passed when there is no previous version."""
    from tfllm.apps.classify import LocalClassifier
    from tfllm.config import load_config
    from tfllm.data.tasks import read_examples
    from tfllm.finetune.inference import evaluate_run
    from tfllm.finetune.train import FinetuneConfig

    if not Path(data).is_file():
        raise InputError(f"--regression-data {data}: file not found")
    new = evaluate_run(run_dir, data, quiet=True)
    if "accuracy" not in new:
        raise InputError(f"--regression-data is for classifiers; {run_dir} is not one")
    check = {"data": str(data), "examples": new["examples"], "max_drop_pts": max_drop_pts,
             "new_accuracy": new["accuracy"], "previous_version": None,
             "previous_accuracy": None, "passed": True}
    previous = previous_version(target)
    if previous is None:
        return check
    cfg = load_config(FinetuneConfig, Path(run_dir) / "config.yaml").task  # evaluate_run checked it
    rows = read_examples(data, text_column=cfg.text_column, label_column=cfg.label_column,
                         text_pair_column=cfg.text_pair_column, fmt=cfg.format)
    if cfg.text_pair_column:
        raise InputError("--regression-data: sentence-pair classifiers are not supported yet")
    served = LocalClassifier(previous)
    predicted = served.predict([e.text for e in rows]).argmax(-1)
    accuracy = float(np.mean([served.labels[k] == e.label
                              for k, e in zip(predicted, rows, strict=True)]))
    check.update(previous_version=int(previous.name), previous_accuracy=accuracy,
                 passed=new["accuracy"] >= accuracy - max_drop_pts / 100)
    return check
