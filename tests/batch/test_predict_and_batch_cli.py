"""`tfllm predict` on an export (onnxruntime, no TensorFlow) and `tfllm batch` without Beam."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tfllm.batch.exported import ExportedModel
from tfllm.cli import main


def test_predict_on_an_export_prints_the_rows_the_batch_pipeline_writes(
    tmp_path: Path, write_export, sentences: list[str], capsys,
) -> None:
    version = write_export(tmp_path / "repo", "sst2", 1)
    texts = sentences[:5]
    assert main(["predict", "--model", str(tmp_path / "repo" / "sst2"), *texts]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == texts
    assert [{k: v for k, v in line.items() if k != "text"} for line in lines] == \
        ExportedModel(version).rows(texts)
    assert {line["label"] for line in lines} <= {"negative", "positive"}


def test_batch_without_beam_says_which_extra_to_install(tmp_path: Path, capsys) -> None:
    if importlib.util.find_spec("apache_beam") is not None:
        pytest.skip("Apache Beam is installed here")
    code = main(["batch", "--model", str(tmp_path), "--input", "x", "--output", "y"])
    assert code != 0
    assert ".[batch]" in capsys.readouterr().err
