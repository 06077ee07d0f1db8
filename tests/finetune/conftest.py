"""Shared fine-tuning fixtures: real SST-2 slices and one tiny random-init run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfllm.cli import main

TINY_FT = ["--set", "model.size=tiny", "--set", "train.batch_size=16", "--set", "train.epochs=1",
           "--set", "task.max_len=48", "--set", "train.learning_rate=1e-3"]


@pytest.fixture(scope="session")
def sst2_slice(tmp_path_factory, data_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sst2")
    train = (data_dir / "sst2" / "train.tsv").read_text().splitlines()
    dev = (data_dir / "sst2" / "dev.tsv").read_text().splitlines()
    (root / "train.tsv").write_text("\n".join(train[:401]) + "\n")
    (root / "dev.tsv").write_text("\n".join(dev[:1] + dev[1:101] + dev[-100:]) + "\n")
    return {"train": root / "train.tsv", "dev": root / "dev.tsv", "root": root}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, sst2_slice, sst2_vocab) -> Path:
    vocab = sst2_vocab
    out = tmp_path_factory.mktemp("ft") / "run"
    rc = main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", "none",
               "--out", str(out), "--train", str(sst2_slice["train"]),
               "--eval", str(sst2_slice["dev"]), "--set", f"model.tokenizer={vocab}", *TINY_FT])
    assert rc == 0
    return out


