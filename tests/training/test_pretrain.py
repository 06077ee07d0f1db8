"""`tfllm pretrain`: distributed steps, resume after SIGKILL, the RUN_DIR, bad configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.training.conftest import TINY, free_port, kill_at_checkpoint, make_data
from tfllm.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = str(REPO / "configs" / "pretrain" / "tiny.yaml")
# Dropout off: replicas draw different dropout masks, which is noise, not a bug.
EXACT = ["--set", "model.dropout=0.0"]


def pretrain_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tfllm.cli", "pretrain", "--config", TINY_CONFIG,
            "--data", str(data), "--out", str(out), *TINY, *extra]


def weights(h5_path: Path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(h5_path, "r") as f:
        f.visititems(lambda name, obj: found.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return found


def run_two_cpu_script(script: str, data: Path, out: Path, *overrides: str) -> dict:
    """A script beside this file in a fresh process (it makes 2 logical CPUs before TF
    starts), on the tiny model without dropout; its `RESULT {json}` line."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name(script)), TINY_CONFIG, str(data), str(out),
         *[a for a in TINY + EXACT if a != "--set"], *overrides],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULT ", 1)[1])


def test_two_replicas_on_logical_cpus_match_one_replica_on_the_same_global_batch(tmp_path,
                                                                                 tiny_data):
    result = run_two_cpu_script("replica_parity.py", tiny_data, tmp_path, "train.steps=10")
    assert result["default"]["replicas"] == 1 and result["mirrored"]["replicas"] == 2
    assert result["mirrored"]["loss"] == pytest.approx(result["default"]["loss"], rel=1e-4)
    assert "not divisible by the 2 replicas" in result["odd_batch_error"]
    single = weights(tmp_path / "default" / "backbone" / "model.weights.h5")
    double = weights(tmp_path / "mirrored" / "backbone" / "model.weights.h5")
    # Adam divides by sqrt(v): a near-zero gradient that differs only in float summation
    # order can move a weight by up to one step (lr <= 1e-3) per step, so compare the
    # trajectory in bulk: tiny mean difference, no weight further than the 10 steps allow.
    for name, value in single.items():
        diff = np.abs(double[name] - value)
        assert diff.mean() < 1e-4 and diff.max() < 1e-2, (name, diff.mean(), diff.max())


def test_two_worker_multi_worker_run_on_localhost_ends_with_identical_weights(tmp_path,
                                                                               tiny_data):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            pretrain_cmd(tiny_data, tmp_path / "run", "--set", "train.steps=6"),
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]
    chief, worker = tmp_path / "run", tmp_path / "run" / "worker-1"
    for run in (chief, worker):
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["steps"] == 6 and metrics["replicas"] == 2
    a, b = (weights(r / "backbone" / "model.weights.h5") for r in (chief, worker))
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_run_killed_with_sigkill_resumes_with_the_same_command_to_the_same_end(tmp_path,
                                                                                  tiny_data):
    extra = ("--set", "train.steps=60", "--set", "train.checkpoint_every=10", *EXACT)
    reference = subprocess.run(pretrain_cmd(tiny_data, tmp_path / "whole", *extra), cwd=REPO,
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]

    command = pretrain_cmd(tiny_data, tmp_path / "killed", *extra)
    kill_at_checkpoint(command, tmp_path / "killed", 20, REPO)

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    after = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert after["steps"] == whole["steps"] == 60
    assert after["loss"] == pytest.approx(whole["loss"], rel=0.02)


def test_run_dir_holds_model_backbone_preset_tokenizer_config_metrics_and_logs(
        tmp_path, tiny_data, tiny_eval_data):
    out = tmp_path / "run"
    rc = main(["pretrain", "--config", TINY_CONFIG, "--data", str(tiny_data), "--eval-data",
               str(tiny_eval_data), "--out", str(out), *TINY, "--set", "train.steps=10",
               "--set", "train.eval_batches=3"])
    assert rc == 0
    for name in ("model.keras", "config.yaml", "metrics.json", "tokenizer/vocab.txt",
                 "tokenizer/tokenizer.json", "backbone/config.json", "checkpoints/checkpoint"):
        assert (out / name).exists(), name
    assert list((out / "logs" / "train").glob("events.out.tfevents.*"))
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("mlm_accuracy", "nsp_accuracy", "mlm_perplexity", "steps", "samples_per_second",
                "unigram_mlm_accuracy"):
        assert key in metrics, key
    assert metrics["mean_padded_length"] == 64
    import keras
    import keras_hub

    backbone = keras_hub.models.Backbone.from_preset(str(out / "backbone"))
    tokenizer = keras_hub.models.BertTokenizer.from_preset(str(out / "backbone"))
    assert backbone.num_layers == 1 and tokenizer.vocabulary_size() == 2000
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    assert model.backbone.count_params() == backbone.count_params()
    # preset/ is keras-hub's BertMaskedLM with the run's tied MLM head, on raw text
    masked_lm = keras_hub.models.BertMaskedLM.from_preset(str(out / "preset"))
    for mine, theirs in zip(model.mlm_head.weights, masked_lm.masked_lm_head.weights,
                            strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    logits = masked_lm.predict(["the game was released in japan in 2011 ."], verbose=0)
    assert logits.shape == (1, 10, 2000)  # the data's 10 masked positions, the vocab
    # a finished run is never overwritten
    assert main(["pretrain", "--config", TINY_CONFIG, "--data", str(tiny_data),
                 "--out", str(out), *TINY, "--set", "train.steps=10"]) == 2


def test_length_buckets_train_on_batches_padded_below_seq_len(tmp_path, data_dir, tiny_vocab):
    # every example gets a random shorter target length, so most batches fit a short bucket
    short = make_data(tmp_path, data_dir / "wikitext2" / "wiki.test.tokens", tiny_vocab, "short",
                      ["--set", "examples.short_seq_prob=1.0"])
    out = tmp_path / "run"
    assert main(["pretrain", "--config", TINY_CONFIG, "--data", str(short), "--out", str(out),
                 *TINY, "--set", "train.steps=10", "--set", "train.bucket_width=16"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 10 and np.isfinite(metrics["loss"])
    assert 16 <= metrics["mean_padded_length"] < 64


def test_keras_callbacks_hear_each_step_call_and_the_final_metrics(tmp_path, tiny_data):
    import keras

    from tfllm.config import load_config
    from tfllm.training.pretrain import PretrainConfig, pretrain

    cfg = load_config(PretrainConfig, TINY_CONFIG,
                      [arg for arg in TINY if arg != "--set"] + ["train.steps=10",
                                                                 "train.steps_per_execution=5"])
    heard = []

    class Recorder(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            heard.append(("begin", type(self.model).__name__))

        def on_train_batch_end(self, batch, logs=None):
            heard.append(("batch", batch, np.isfinite(logs["loss"])))

        def on_train_end(self, logs=None):
            heard.append(("end", logs["steps"]))

    pretrain(cfg, tiny_data, tmp_path / "run", quiet=True, callbacks=[Recorder()])
    assert heard == [("begin", "BertPretrainer"), ("batch", 4, True), ("batch", 9, True),
                     ("end", 10)]


@pytest.mark.parametrize("case", ["unknown_size", "missing_data", "other_vocab", "no_nsp_data",
                                  "bucket_too_wide"])
def test_bad_configs_fail_before_training_with_a_clear_error(tmp_path, data_dir, tiny_data, case,
                                                             capsys):
    args = ["pretrain", "--config", TINY_CONFIG, "--data", str(tiny_data), "--out",
            str(tmp_path / "run"), *TINY]
    if case == "unknown_size":
        args[2], expected = str(REPO / "configs" / "pretrain" / "huge.yaml"), "sizes: base"
    elif case == "missing_data":
        args[4], expected = str(tmp_path / "nowhere"), "no such folder"
    elif case == "other_vocab":
        assert main(["vocab", "--corpus", str(data_dir / "sst2" / "dev.tsv"), "--vocab-size",
                     "500", "--out", str(tmp_path / "v2")]) == 0
        other = make_data(tmp_path, data_dir / "sst2" / "dev.tsv", tmp_path / "v2", "d2",
                          ["--no-nsp"])
        args += ["--eval-data", str(other)]
        expected = "made with another vocab"
    elif case == "bucket_too_wide":
        args += ["--set", "train.bucket_width=65"]
        expected = "train.bucket_width must be 0 (off) to seq_len 64"
    else:
        args[4] = str(make_data(tmp_path, data_dir / "wikitext2" / "wiki.test.tokens",
                                tiny_data / "tokenizer", "nonsp", ["--no-nsp"]))
        expected = "model.nsp=false"
    assert main(args) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints" / "checkpoint").exists()


def test_accumulated_micro_batches_update_like_one_big_batch_on_one_and_two_replicas(
        tmp_path, tiny_data):
    # Constant learning rate (Keras schedules see micro-steps), no dropout, clipping that
    # bites (clipnorm 0.05): 3 updates of 16 examples each way.
    diff = run_two_cpu_script(
        "accumulation_parity.py", tiny_data, tmp_path, "optimizer.warmup_steps=0",
        "optimizer.final_lr_fraction=1.0", "optimizer.learning_rate=1e-3",
        "optimizer.clipnorm=0.05")
    # Float summation order differs; Adam's first steps move a weight by about lr * sign(g),
    # so a near-zero gradient component can differ by a fraction of lr: 2e-4 = lr / 5.
    assert diff["accumulated_2x8"] < 2e-4, diff
    assert diff["accumulated_2x8_on_2_replicas"] < 2e-4, diff
    assert diff["control_batches_of_8"] > 1e-3, diff  # what not accumulating looks like
