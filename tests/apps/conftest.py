"""Real models for the applications: MiniLM fine-tuned briefly on Financial PhraseBank and on
six BANKING77 intents, each exported to ONNX (the apps run without TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfllm.cli import main

B77_INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed",
               "pending_transfer", "terminate_account"]


@pytest.fixture(scope="session")
def fpb_repo(tmp_path_factory, minilm_dir) -> Path:
    """REPO/fpb/1: trained on the seeded 80% split; the other 20% stays unseen."""
    root = tmp_path_factory.mktemp("fpb")
    assert main(["finetune", "--config", "configs/finetune/financial_phrasebank.yaml",
                 "--init", str(minilm_dir), "--out", str(root / "run"),
                 "--set", "train.epochs=2", "--set", "task.max_len=64",
                 "--set", "train.batch_size=32", "--set", "train.learning_rate=1e-4",
                 "--set", "train.bucket_by_length=true"]) == 0
    assert main(["export", "--model", str(root / "run"), "--out", str(root / "repo" / "fpb" / "1"),
                 "--formats", "onnx"]) == 0
    return root / "repo" / "fpb"


def b77_rows(path: Path, intents: list[str]) -> list[str]:
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    return [lines[0]] + [line for line in lines[1:] if line.rsplit(",", 1)[-1] in intents]


@pytest.fixture(scope="session")
def b77_repo(tmp_path_factory, minilm_dir, data_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("b77")
    for split in ("train", "test"):
        (root / f"{split}.csv").write_text(
            "\n".join(b77_rows(data_dir / "banking77" / f"{split}.csv", B77_INTENTS)) + "\n")
    assert main(["finetune", "--config", "configs/finetune/banking77.yaml", "--init",
                 str(minilm_dir), "--out", str(root / "run"), "--train", str(root / "train.csv"),
                 "--set", "task.test=null", "--set", "train.epochs=2",
                 "--set", "train.bucket_by_length=true"]) == 0
    assert main(["export", "--model", str(root / "run"), "--out",
                 str(root / "repo" / "b77" / "1"), "--formats", "onnx"]) == 0
    return {"repo": root / "repo" / "b77", "test": root / "test.csv"}
