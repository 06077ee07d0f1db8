"""Writing a RUN_DIR (DESIGN.md): model, reusable backbone preset, tokenizer, config, metrics.

`metrics.json` is written last and atomically: its presence is what marks a finished run,
so an interrupted save never looks complete.

Example (layout):

    RUN_DIR/model.keras  backbone/  tokenizer/  [labels.json]  config.yaml  metrics.json
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tfllm_serving.wordpiece import is_lowercase, load_tokenizer

from tfllm.atomic import atomic_write_text
from tfllm.config import save_config


def save_run_dir(out: Path, model: Any, backbone: Any, tokenizer_dir: Path, config: Any,
                 metrics: dict, labels: list[str] | None = None) -> None:
    """Write every RUN_DIR file; `backbone/` is a keras-hub preset with its BertTokenizer,
    so it loads with `from_preset` and works as `--init`."""
    import keras_hub

    tmp_model = out / ".model.tmp.keras"
    model.save(tmp_model)
    tmp_model.replace(out / "model.keras")
    preset_tmp = out / ".backbone.tmp"
    shutil.rmtree(preset_tmp, ignore_errors=True)
    backbone.save_to_preset(str(preset_tmp))
    keras_hub.models.BertTokenizer(
        vocabulary=str(tokenizer_dir / "vocab.txt"),
        lowercase=is_lowercase(load_tokenizer(tokenizer_dir)),
    ).save_to_preset(str(preset_tmp))
    shutil.rmtree(out / "backbone", ignore_errors=True)
    preset_tmp.rename(out / "backbone")
    if tokenizer_dir.resolve() != (out / "tokenizer").resolve():
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
        shutil.copytree(tokenizer_dir, out / "tokenizer")
    if labels is not None:
        (out / "labels.json").write_text(json.dumps(labels) + "\n")
    save_config(config, out / "config.yaml")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
