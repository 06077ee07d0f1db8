"""The examples in the serving modules' docstrings run and say what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["config", "repository", "batching", "metrics", "logs", "openapi", "errors",
           "runtime", "inputs", "manager", "rest", "server"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name: str) -> None:
    module = importlib.import_module(f"tfllm_serving.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
