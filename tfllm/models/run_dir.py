"""Writing a RUN_DIR (DESIGN.md): model, reusable backbone preset, tokenizer, config, metrics.

`metrics.json` is written last and atomically: its presence is what marks a finished run,
so an interrupted save never looks complete.

Example (layout):

    RUN_DIR/model.keras  backbone/  [preset/]  tokenizer/  [labels.json]  config.yaml  metrics.json

`preset/` is a keras-hub task preset (`TextClassifier.from_preset`, `BertMaskedLM.from_preset`)
where keras-hub has a task class for the run's model (`tfllm.models.presets`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tfllm_serving.wordpiece import is_lowercase, load_tokenizer, read_vocab

from tfllm.atomic import atomic_write_text
from tfllm.config import save_config


def save_run_dir(out: Path, model: Any, backbone: Any, tokenizer_dir: Path, config: Any,
                 metrics: dict, labels: list[str] | None = None, task: Any = None) -> None:
    """Write every RUN_DIR file; `backbone/` is a keras-hub preset with its BertTokenizer,
    so it loads with `from_preset` and works as `--init`; `task` (a keras-hub task with its
    preprocessor) also goes to `preset/`."""
    tmp_model = out / ".model.tmp.keras"
    model.save(tmp_model)
    tmp_model.replace(out / "model.keras")
    save_init(out, backbone, tokenizer_dir)
    if task is not None:
        _save_preset(out, "preset", task.save_to_preset)
    if labels is not None:
        (out / "labels.json").write_text(json.dumps(labels) + "\n")
    save_config(config, out / "config.yaml")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def save_init(out: Path, backbone: Any, tokenizer_dir: Path) -> None:
    """`out/backbone/` (keras-hub preset with its BertTokenizer) and `out/tokenizer/`: what
    `--init` needs of a folder."""
    from tfllm.models.presets import keras_hub_tokenizer

    tokenizer = keras_hub_tokenizer(read_vocab(tokenizer_dir / "vocab.txt"),
                                    is_lowercase(load_tokenizer(tokenizer_dir)))
    _save_preset(out, "backbone", lambda path: (backbone.save_to_preset(path),
                                                tokenizer.save_to_preset(path)))
    if tokenizer_dir.resolve() != (out / "tokenizer").resolve():
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
        shutil.copytree(tokenizer_dir, out / "tokenizer")


def _save_preset(out: Path, name: str, save) -> None:
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save(str(tmp))
    shutil.rmtree(out / name, ignore_errors=True)
    tmp.rename(out / name)


def load_run_model(run_dir: Path) -> Any:
    """`RUN_DIR/model.keras` (safe mode) for tfllm's own id-fed use: a keras-hub task's
    preprocessor is dropped (tfllm encodes with `tfllm_serving.wordpiece`)."""
    import keras

    import tfllm.models.encoder  # noqa: F401  (registers the classes of pruned and adapter runs)
    from tfllm.models.presets import without_preprocessor

    # compile=False: tfllm never trains or evaluates through a loaded run's compile state, and
    # a distilled run's compiled loss (DistillationLoss) is training-only
    return without_preprocessor(keras.saving.load_model(Path(run_dir) / "model.keras",
                                                        safe_mode=True, compile=False))
