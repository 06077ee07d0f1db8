"""Tiny real pretraining data (WikiText-2 slice) shared by the training tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tfllm.cli import main

# A model small enough that a few steps take well under a second on 2 cores.
TINY = ["--set", "model.num_layers=1", "--set", "model.hidden_dim=32", "--set", "model.num_heads=2",
        "--set", "model.intermediate_dim=64", "--set", "model.max_sequence_length=64",
        "--set", "train.batch_size=8", "--set", "train.log_every=5"]


def make_data(root: Path, corpus: Path, vocab: Path, name: str, extra=()) -> Path:
    out = root / name
    assert main(["data", "pretrain", "--corpus", str(corpus), "--tokenizer", str(vocab),
                 "--seq-len", "64", "--dupe-factor", "1", "--out", str(out),
                 "--set", "examples.max_predictions_per_seq=10",
                 "--set", "examples.examples_per_shard=500", *extra]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_vocab(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("pt") / "vocab"
    assert main(["vocab", "--corpus", str(data_dir / "wikitext2" / "wiki.valid.tokens"),
                 "--vocab-size", "2000", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, data_dir, tiny_vocab) -> Path:
    return make_data(tmp_path_factory.mktemp("pt"), data_dir / "wikitext2" / "wiki.valid.tokens",
                     tiny_vocab, "train")


@pytest.fixture(scope="session")
def tiny_eval_data(tmp_path_factory, data_dir, tiny_vocab) -> Path:
    return make_data(tmp_path_factory.mktemp("pt"), data_dir / "wikitext2" / "wiki.test.tokens",
                     tiny_vocab, "eval")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_at_checkpoint(command: list[str], out: Path, step: int, cwd: Path) -> None:
    """Start `command` and SIGKILL it once its checkpoint of `step` is written."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    index = out / "checkpoints" / "checkpoint"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if index.is_file() and f"ckpt-{step}" in index.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
