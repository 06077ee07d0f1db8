"""Embedding fixtures: a small WordPiece vocab trained on real text."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfllm.cli import main


@pytest.fixture(scope="session")
def tiny_vocab_dir(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("emb-vocab") / "vocab"
    assert main(["vocab", "--corpus", str(data_dir / "sst2" / "train.tsv"), "--vocab-size", "3000",
                 "--out", str(out)]) == 0
    return out
