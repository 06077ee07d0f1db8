"""Distillation from a teacher run on a real SST-2 slice: the KD loss falls, the targets stay
aligned with their rows, bad settings are refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.finetune.conftest import TINY_FT
from tfllm.cli import main


def _distil(init: Path, out: Path, sst2_slice: dict, *sets: str) -> int:
    args = [a for s in sets for a in ("--set", s)]
    return main(["finetune", "--config", "configs/finetune/sst2.yaml", "--init", str(init),
                 "--out", str(out), "--train", str(sst2_slice["train"]), "--eval",
                 str(sst2_slice["dev"]), *TINY_FT, *args])


def _confident_teacher(run: Path, out: Path) -> Path:
    """`run` with its output layer scaled x20: the same decisions, confident logits (a one-epoch
    tiny run is close to uniform, which would leave the KD loss near zero either way)."""
    from tfllm.models.run_dir import load_run_model

    model = load_run_model(run)
    head = model.get_layer("logits")
    head.set_weights([w * 20 for w in head.get_weights()])
    out.mkdir()
    model.save(out / "model.keras")
    for name in ("labels.json", "config.yaml", "tokenizer"):
        (out / name).symlink_to(run / name)
    return out


def test_distilling_from_a_teacher_equal_to_the_students_init_reduces_the_kd_loss(
        tmp_path, tiny_run, sst2_slice):
    teacher = _confident_teacher(tiny_run, tmp_path / "teacher")
    out = tmp_path / "student"
    assert _distil(tiny_run, out, sst2_slice, f"method.distill_from={teacher}",
                   "method.distill_alpha=0.9", "method.distill_temperature=2.0") == 0
    kd = json.loads((out / "metrics.json").read_text())["distillation"]
    # The student starts from the teacher's backbone with a new random head: far from the
    # teacher's outputs at first, closer after one epoch on the teacher's soft targets.
    assert kd["kd_loss_eval_after"] < 0.5 * kd["kd_loss_eval_before"], kd
    assert not (out / "checkpoints").exists()  # the cached teacher logits went with it


def test_a_teacher_over_the_first_labels_only_compares_those_columns():
    from tfllm.finetune.distill import DistillationLoss, distillation_targets

    teacher = np.array([[3.0, -1.0], [0.0, 2.0]], "float32")  # knew 2 of the student's 4
    targets = distillation_targets(np.eye(4, dtype="float32")[[2, 3]], teacher, False)
    loss = DistillationLoss(num_classes=4, alpha=1.0, teacher_classes=2)
    same_old = np.concatenate([teacher, np.array([[9.0, -9.0], [-9.0, 9.0]], "float32")], 1)
    assert float(loss(targets, same_old)) < 1e-6  # the new columns do not enter the soft term
    swapped = np.concatenate([teacher[:, ::-1], same_old[:, 2:]], 1)
    assert float(loss(targets, swapped)) > 0.1


def test_distillation_targets_follow_their_rows_through_shuffling():
    from tfllm.finetune.distill import distillation_targets
    from tfllm.finetune.features import batched

    labels = np.eye(2, dtype="float32")[[0, 1, 1, 0, 1]]
    teacher = np.arange(10, dtype="float32").reshape(5, 2)
    x = {"token_ids": np.arange(5)[:, None].repeat(3, 1).astype("int32"),
         "padding_mask": np.ones((5, 3), "int32"), "segment_ids": np.zeros((5, 3), "int32")}
    for features, target in batched(x, distillation_targets(labels, teacher, False), 2, True, 7):
        rows = np.asarray(features["token_ids"])[:, 0]
        np.testing.assert_array_equal(np.asarray(target)[:, 2:], teacher[rows])
        np.testing.assert_array_equal(np.asarray(target)[:, :2], labels[rows])


@pytest.mark.parametrize("setting, message", [
    ("method.distill_from={missing}", "not a fine-tuned RUN_DIR"),
    ("method.distill_alpha=1.5", "distill_alpha must be in [0, 1]"),
    ("method.distill_temperature=0", "distill_temperature must be > 0"),
])
def test_bad_distillation_settings_exit_2_before_any_work(tmp_path, tiny_run, sst2_slice, capsys,
                                                          setting, message):
    out = tmp_path / "student"
    sets = [setting.format(missing=tmp_path / "nothing")]
    if "distill_from" not in setting:
        sets.append(f"method.distill_from={tiny_run}")
    assert _distil(tiny_run, out, sst2_slice, *sets) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_teacher_with_other_labels_is_refused(tmp_path, tiny_run, sst2_slice, capsys):
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    for name in ("model.keras", "tokenizer"):
        (teacher / name).symlink_to(tiny_run / name)
    (teacher / "labels.json").write_text(json.dumps(["neg", "pos"]))
    out = tmp_path / "student"
    assert _distil(tiny_run, out, sst2_slice, f"method.distill_from={teacher}") == 2
    assert "differ from the training data's" in capsys.readouterr().err
    assert not (out / "metrics.json").exists()
