"""Tiny real exports for the batch tests: the serving tests' ONNX builder (no TensorFlow),
loaded under a name of its own."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "serving_test_models", Path(__file__).resolve().parents[1] / "serving" / "conftest.py")
_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_models)


@pytest.fixture(scope="session")
def write_version() -> Callable[..., Path]:
    """`write_version(repo, name, version, ...)`: an export folder as `tfllm export` writes it."""
    return _models.write_version


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    """Real SST-2 dev sentences."""
    return _models.sst2_dev_sentences(60)
