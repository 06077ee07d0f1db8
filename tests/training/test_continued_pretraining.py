"""`tfllm pretrain --init`: continued MLM from a pretraining run or from the real MiniLM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.training.conftest import TINY, kill_at_checkpoint, make_data
from tfllm.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = str(REPO / "configs" / "pretrain" / "tiny.yaml")
SHORT = ["--set", "train.batch_size=8", "--set", "train.log_every=5", "--set", "model.dropout=0.0"]


def _backbone_weights(run: Path) -> dict[str, np.ndarray]:
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(str(run / "backbone"))
    return {w.path: np.asarray(w) for w in backbone.weights}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_data) -> Path:
    out = tmp_path_factory.mktemp("cpt") / "first"
    assert main(["pretrain", "--config", TINY_CONFIG, "--data", str(tiny_data), "--out", str(out),
                 *TINY, "--set", "train.steps=10"]) == 0
    return out


def test_continuing_a_pretraining_run_starts_from_its_weights_and_heads(tmp_path, first_run,
                                                                        tiny_data):
    frozen = tmp_path / "lr0"
    assert main(["pretrain", "--init", str(first_run), "--data", str(tiny_data), "--out",
                 str(frozen), *SHORT, "--set", "train.steps=3",
                 "--set", "optimizer.learning_rate=0.0"]) == 0
    before, after = _backbone_weights(first_run), _backbone_weights(frozen)
    assert before.keys() == after.keys()
    for key in before:  # nothing moved at lr 0: the backbone came from the init
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    import keras

    heads = [keras.saving.load_model(run / "model.keras", safe_mode=True)
             for run in (first_run, frozen)]
    for old, new in zip(heads[0].mlm_head.get_weights(), heads[1].mlm_head.get_weights(),
                        strict=True):
        np.testing.assert_array_equal(old, new)  # the MLM head too
    config = (frozen / "config.yaml").read_text()
    assert "num_layers: 1" in config and "hidden_dim: 32" in config  # the init's shape
    assert "nsp: true" in config  # the init trained NSP, so NSP goes on
    assert json.loads((frozen / "metrics.json").read_text())["init"] == str(first_run)

    moved = tmp_path / "lr"
    assert main(["pretrain", "--init", str(first_run), "--data", str(tiny_data), "--out",
                 str(moved), *SHORT, "--set", "train.steps=3"]) == 0
    changed = _backbone_weights(moved)
    assert any(not np.array_equal(before[k], changed[k]) for k in before)


def test_a_continued_run_killed_with_sigkill_resumes_to_the_same_end(tmp_path, first_run,
                                                                     tiny_data):
    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "tfllm.cli", "pretrain", "--init", str(first_run),
                "--data", str(tiny_data), "--out", str(out), *SHORT, "--set", "train.steps=40",
                "--set", "train.checkpoint_every=10"]

    whole = subprocess.run(command(tmp_path / "whole"), cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    kill_at_checkpoint(command(tmp_path / "killed"), tmp_path / "killed", 10, REPO)
    resumed = subprocess.run(command(tmp_path / "killed"), cwd=REPO, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    ends = [json.loads((tmp_path / name / "metrics.json").read_text())
            for name in ("whole", "killed")]
    assert ends[0]["steps"] == ends[1]["steps"] == 40
    assert ends[1]["loss"] == pytest.approx(ends[0]["loss"], rel=0.02)


def test_data_made_with_another_vocab_is_refused_naming_both_sizes(tmp_path, first_run, data_dir,
                                                                   minilm_dir, capsys):
    data = make_data(tmp_path, data_dir / "wikitext2" / "wiki.valid.tokens", minilm_dir, "minilm")
    assert main(["pretrain", "--init", str(first_run), "--data", str(data), "--out",
                 str(tmp_path / "x"), *SHORT, "--set", "train.steps=2"]) == 2
    err = capsys.readouterr().err
    assert "30522 tokens" in err and "has 2000" in err and "--tokenizer" in err
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_continued_pretraining_of_minilm_gives_a_run_dir_that_fine_tunes(
        tmp_path, data_dir, minilm_dir):
    data = make_data(tmp_path, data_dir / "wikitext2" / "wiki.valid.tokens", minilm_dir, "minilm")
    run = tmp_path / "minilm-mlm"
    assert main(["pretrain", "--init", str(minilm_dir), "--data", str(data), "--out", str(run),
                 *SHORT, "--set", "train.steps=4", "--set", "optimizer.warmup_steps=1"]) == 0
    config = (run / "config.yaml").read_text()
    assert "hidden_dim: 384" in config and "nsp: false" in config  # MiniLM has no NSP head
    rows = (data_dir / "sst2" / "train.tsv").read_text().splitlines()
    (tmp_path / "train.tsv").write_text("\n".join(rows[:161]) + "\n")
    assert main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", str(run),
                 "--out", str(tmp_path / "ft"), "--train", str(tmp_path / "train.tsv"),
                 "--set", "task.eval=null", "--set", "task.eval_split=0.2",
                 "--set", "train.epochs=1", "--set", "task.max_len=32"]) == 0
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["init_kind"] == "run_dir" and metrics["total_params"] > 22_000_000
