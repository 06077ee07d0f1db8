"""The feedback loop end to end on real data: a served SST-2 model, feedback on financial news
posted over REST, the next version trained from it, gated against the old test data,
served without a restart; a version that forgot is refused and the old one keeps serving."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
import pytest

from tests.finetune.conftest import sst2_slice, tiny_run  # noqa: F401
from tests.serving.conftest import launch_server
from tfllm.cli import main

SENTIMENT = {"negative": "0", "positive": "1"}  # the SST-2 run's label names


def _financial_news(data_dir: Path) -> list[tuple[str, str]]:
    lines = (data_dir / "financial_phrasebank" / "sentences_allagree.tsv").read_text(
        encoding="utf-8").splitlines()[1:]
    rows = [(text, SENTIMENT[label]) for text, label in (line.rsplit("\t", 1) for line in lines)
            if label in SENTIMENT]
    random.Random(0).shuffle(rows)
    return rows


def _accuracy(base: str, rows: list[tuple[str, str]]) -> float:
    r = httpx.post(f"{base}/v1/models/sst2:predict", json={"instances": [t for t, _ in rows]},
                   timeout=60)
    assert r.status_code == 200, r.text
    labels = ["0", "1"]
    predicted = [labels[max(range(2), key=p["probabilities"].__getitem__)]
                 for p in r.json()["predictions"]]
    return sum(p == y for p, (_, y) in zip(predicted, rows, strict=True)) / len(rows)


def _served_version(base: str) -> int:
    status = httpx.get(f"{base}/v1/models/sst2", timeout=10).json()["model_version_status"]
    return max(int(s["version"]) for s in status if s["state"] == "AVAILABLE")


def _wait_for_version(base: str, version: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _served_version(base) != version:
        assert time.monotonic() < deadline, f"version {version} never served"
        time.sleep(0.2)


@pytest.fixture
def served(tmp_path, tiny_run):  # noqa: F811
    repo = tmp_path / "repo"
    assert main(["export", "--model", str(tiny_run), "--out", str(repo / "sst2" / "1"),
                 "--formats", "onnx"]) == 0
    logs = tmp_path / "feedback"
    server = launch_server(repo, {"feedback": {"enabled": True, "log_dir": str(logs),
                                               "log_text": True}}, tmp=tmp_path)
    server.wait_ready()
    yield server, repo, logs
    server.stop()


def test_feedback_trains_a_version_that_is_gated_and_hot_loaded_and_a_forgetful_one_is_refused(
        served, tmp_path, data_dir, tiny_run, sst2_slice):  # noqa: F811
    server, repo, logs = served
    news = _financial_news(data_dir)
    feedback, new_test = news[:480], news[480:680]
    old_test = sst2_slice["dev"]
    old_rows = [(line.rsplit("\t", 1)[0], line.rsplit("\t", 1)[1])
                for line in old_test.read_text().splitlines()[1:]]
    new_before = _accuracy(server.base, new_test)
    old_before = _accuracy(server.base, old_rows)

    # users correct the served model: half by prediction id, half by text
    half = len(feedback) // 2
    r = httpx.post(f"{server.base}/v1/models/sst2:predict",
                   json={"instances": [t for t, _ in feedback[:half]]}, timeout=60)
    rid = r.headers["x-request-id"]
    for row, (text, label) in enumerate(feedback):
        body = {"id": f"{rid}-{row}", "label": label} if row < half else \
            {"text": text, "label": label}
        assert httpx.post(f"{server.base}/v1/models/sst2:feedback", json=body,
                          timeout=10).status_code == 200
    assert len((logs / "feedback.jsonl").read_text().splitlines()) == len(feedback)

    # the next version: feedback + replay of the run's own rows, then the regression gate
    v2 = tmp_path / "v2"
    assert main(["continual", "--feedback", str(logs / "feedback.jsonl"), "--init",
                 str(tiny_run), "--out", str(v2), "--replay-rows", "400",
                 "--set", "train.epochs=3"]) == 0
    metrics = json.loads((v2 / "metrics.json").read_text())
    assert metrics["feedback"]["records"] == len(feedback) and metrics["replay_rows"] == 400
    assert main(["export", "--model", str(v2), "--out", str(repo / "sst2"), "--version", "auto",
                 "--formats", "onnx", "--regression-data", str(old_test)]) == 0
    report = json.loads((repo / "sst2" / "2" / "export_report.json").read_text())
    assert report["regression"]["previous_version"] == 1 and report["regression"]["passed"]
    _wait_for_version(server.base, 2)  # picked up by the running server, no restart
    new_after = _accuracy(server.base, new_test)
    old_after = _accuracy(server.base, old_rows)
    assert new_after > new_before + 0.05, (new_before, new_after)
    assert old_after >= old_before - 0.005, (old_before, old_after)

    # a version trained on the feedback alone, hard, forgets SST-2: refused, nothing written
    v3 = tmp_path / "v3"
    assert main(["continual", "--feedback", str(logs / "feedback.jsonl"), "--init", str(v2),
                 "--out", str(v3), "--replay-rows", "0", "--set", "train.epochs=8",
                 "--set", "train.learning_rate=5e-3"]) == 0
    assert main(["export", "--model", str(v3), "--out", str(repo / "sst2"), "--version", "auto",
                 "--formats", "onnx", "--regression-data", str(old_test)]) == 1
    assert not (repo / "sst2" / "3").exists()
    time.sleep(1.0)  # several polls of the repository
    assert _served_version(server.base) == 2
    assert _accuracy(server.base, old_rows) == old_after


def test_feedback_with_a_label_outside_the_head_stops_with_the_line(
        tmp_path, tiny_run, capsys):  # noqa: F811
    path = tmp_path / "feedback.jsonl"
    path.write_text(json.dumps({"model": "sst2", "text": "fine", "label": "1"}) + "\n"
                    + json.dumps({"model": "sst2", "text": "awful", "label": "bearish"}) + "\n")
    rc = main(["continual", "--feedback", str(path), "--init", str(tiny_run),
               "--out", str(tmp_path / "next")])
    assert rc == 2
    assert "record 2: label 'bearish'" in capsys.readouterr().err
    assert not (tmp_path / "next").exists()
