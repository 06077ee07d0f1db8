"""Switches whose breaking no other test would notice: early stopping keeps the best epoch,
class weights raise a rare class's recall. Real SST-2 rows, tiny random-init models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.finetune.conftest import TINY_FT
from tfllm.cli import main


def _rows(path: Path) -> tuple[str, list[str]]:
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    return header, rows


def test_early_stopping_stops_and_keeps_the_best_epochs_weights(tmp_path, sst2_vocab, data_dir,
                                                               capsys):
    # The eval file is 300 of the training rows with their labels flipped: the better the
    # model fits its training labels, the lower its eval accuracy, so the best epoch comes
    # early and the run must stop, and keep that epoch, well before its 8 epochs.
    header, rows = _rows(data_dir / "sst2" / "train.tsv")
    train, flipped = tmp_path / "train.tsv", tmp_path / "flipped.tsv"
    train.write_text("\n".join([header, *rows[:1000]]) + "\n")
    flipped.write_text("\n".join([header] + [f"{text}\t{1 - int(label)}" for text, label in
                                             (row.rsplit("\t", 1) for row in rows[:300])]) + "\n")
    run = tmp_path / "run"
    patience = 2
    assert main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", "none",
                 "--out", str(run), "--train", str(train), "--eval", str(flipped),
                 "--set", f"model.tokenizer={sst2_vocab}", *TINY_FT, "--set", "train.epochs=8",
                 "--set", "train.batch_size=32", "--set", "train.learning_rate=1e-3",
                 "--set", "train.warmup_ratio=0.0",
                 "--set", f"train.early_stopping_patience={patience}"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    curve = metrics["history"]["val_accuracy"]
    best = max(curve)
    assert metrics["epochs_run"] == len(curve) < 8, curve  # it stopped
    assert len(curve) - 1 - curve.index(best) == patience, curve  # `patience` epochs after the best
    assert curve[-1] < best - 0.05, curve  # keeping the last epoch's weights would show
    assert metrics["accuracy"] == pytest.approx(best, abs=1e-6)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--data", str(flipped)]) == 0
    saved = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert saved["accuracy"] == pytest.approx(best, abs=1e-6)  # model.keras holds the best epoch


def test_class_weights_raise_the_recall_of_a_rare_class(tmp_path, sst2_slice, sst2_vocab,
                                                        data_dir):
    # The same 1,200 rows (10% negative) with and without class weights, scored on the
    # balanced dev slice: weighting the rare class must find more of it.
    header, rows = _rows(data_dir / "sst2" / "train.tsv")
    negative = [r for r in rows if r.endswith("\t0")][:120]
    positive = [r for r in rows if r.endswith("\t1")][:1080]
    train = tmp_path / "imbalanced.tsv"  # 10% negative
    train.write_text("\n".join([header, *sorted(negative + positive)]) + "\n")
    recall = {}
    for weighted in (False, True):
        run = tmp_path / f"weighted-{weighted}"
        assert main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", "none",
                     "--out", str(run), "--train", str(train), "--eval", str(sst2_slice["dev"]),
                     "--set", f"model.tokenizer={sst2_vocab}", *TINY_FT,
                     "--set", "train.epochs=6", "--set", "train.batch_size=32",
                     "--set", "train.learning_rate=3e-3", "--set", "train.warmup_ratio=0.0",
                     "--set", f"train.class_weights={str(weighted).lower()}"]) == 0
        per_class = json.loads((run / "metrics.json").read_text())["per_class"]
        recall[weighted] = per_class["0"]["recall"]
    assert recall[True] >= recall[False] + 0.15, recall
