"""Every `>>>` example in the docstrings of tfllm/, export/ and serving/ runs and shows what
it claims. A module whose source has examples but runs none (all skipped, or a collector
that stopped finding them) fails; the count run is printed at the end of the session."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"tfllm": "tfllm", "export": "tfllm_export", "serving": "tfllm_serving"}


def modules_with_examples() -> list[str]:
    found = []
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            if ">>>" in path.read_text(encoding="utf-8") and "protos" not in path.parts:
                parts = path.relative_to(REPO / folder).with_suffix("").parts
                found.append(".".join((package, *parts)).removesuffix(".__init__"))
    return found


MODULES = modules_with_examples()


def test_the_collector_finds_the_modules_with_examples():
    assert len(MODULES) >= 40
    assert {"tfllm.config", "tfllm_export.onnx_graph", "tfllm_serving.batching"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_and_pass(name: str, record_property) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=False)
    record_property("doctest_examples", result.attempted)
    assert result.attempted > 0, f"{name} has >>> examples but none ran (all skipped?)"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
