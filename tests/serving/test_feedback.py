"""The opt-in prediction log and POST :feedback (a tfllm extension), over HTTP on 127.0.0.1,
with real SST-2 sentences."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, write_model_version) -> Path:
    root = tmp_path_factory.mktemp("feedback") / "repo"
    write_model_version(root, "sst2", 1)
    write_model_version(root, "ner", 1, task="token_classification", id_dtype=np.int32, seed=3)
    return root


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feedback-logs")


@pytest.fixture(scope="module")
def client(repo: Path, logs: Path, start_module_server):
    server = start_module_server(repo, {"feedback": {"enabled": True, "log_dir": str(logs),
                                                     "log_text": True}})
    with httpx.Client(base_url=server.base, timeout=30) as c:
        yield c


def test_predictions_get_ids_in_a_header_and_lines_in_the_log(client, logs, sst2_sentences):
    texts = sst2_sentences[:3]
    r = client.post("/v1/models/sst2:predict", json={"instances": texts},
                    headers={"X-Request-Id": "batch-7"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "batch-7"
    predicted = [p["probabilities"] for p in r.json()["predictions"]]
    # one log per worker slot: predictions.jsonl, predictions-w1.jsonl, ...
    lines = [json.loads(line) for path in logs.glob("predictions*.jsonl")
             for line in path.read_text().splitlines()]
    mine = {line["id"]: line for line in lines if line["id"].startswith("batch-7-")}
    assert sorted(mine) == ["batch-7-0", "batch-7-1", "batch-7-2"]
    for row, (text, probs) in enumerate(zip(texts, predicted, strict=True)):
        line = mine[f"batch-7-{row}"]
        assert line["text"] == text and line["model"] == "sst2" and line["version"] == 1
        assert line["predicted"] == ["negative", "positive"][int(np.argmax(probs))]


def test_feedback_by_id_and_by_text_lands_in_the_feedback_file(client, logs, sst2_sentences):
    r = client.post("/v1/models/sst2:predict", json={"instances": sst2_sentences[3:5]})
    rid = r.headers["x-request-id"]
    ok = client.post("/v1/models/sst2:feedback", json={"id": f"{rid}-1", "label": "negative"})
    assert ok.status_code == 200 and ok.json() == {"status": "recorded", "label": "negative",
                                                   "id": f"{rid}-1"}
    ok = client.post("/v1/models/sst2:feedback",
                     json={"text": "a quietly devastating film", "label": "positive"})
    assert ok.status_code == 200
    records = [json.loads(line) for line in (logs / "feedback.jsonl").read_text().splitlines()]
    assert {"text": sst2_sentences[4], "label": "negative"}.items() <= records[-2].items()
    assert records[-1]["text"] == "a quietly devastating film" and records[-1]["version"] == 1


@pytest.mark.parametrize("path, body, status, message", [
    ("sst2", {"id": "nope-0", "label": "negative"}, 404, "no recent prediction"),
    ("sst2", {"text": "fine", "label": "neutral"}, 400, "one of the model's labels"),
    ("sst2", {"text": "fine"}, 400, "feedback.label"),
    ("sst2", {"text": "", "label": "positive"}, 400, "non-empty"),
    ("sst2", {"id": "x-0", "text": "fine", "label": "positive"}, 400, "exactly one"),
    ("sst2", {"text": "fine", "label": "positive", "user": 3}, 400, "unknown field 'user'"),
    ("sst2", ["fine", "positive"], 400, "JSON object"),
    ("missing", {"text": "fine", "label": "positive"}, 404, "missing"),
    ("ner", {"text": "fine", "label": "O"}, 400, "classification models"),
])
def test_bad_feedback_gets_a_json_4xx_and_writes_nothing(client, logs, path, body, status,
                                                         message):
    before = (logs / "feedback.jsonl").read_bytes() if (logs / "feedback.jsonl").exists() else b""
    r = client.post(f"/v1/models/{path}:feedback", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    after = (logs / "feedback.jsonl").read_bytes() if (logs / "feedback.jsonl").exists() else b""
    assert after == before


def test_a_torn_last_line_is_skipped_and_counted(tmp_path):
    from tfllm_serving.feedback import read_feedback

    path = tmp_path / "feedback.jsonl"
    good = json.dumps({"model": "sst2", "text": "fine", "label": "positive"}) + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(good * 2 + good[:17])  # a crash in the middle of the third write
        fh.flush()
        os.fsync(fh.fileno())
    records, skipped = read_feedback(path, model="sst2")
    assert len(records) == 2 and skipped == 1


def test_feedback_is_off_unless_enabled(repo: Path, start_server):
    server = start_server(repo)
    with httpx.Client(base_url=server.base, timeout=30) as c:
        r = c.post("/v1/models/sst2:predict", json={"instances": ["fine"]})
        assert r.status_code == 200 and "x-request-id" not in r.headers
        r = c.post("/v1/models/sst2:feedback", json={"text": "fine", "label": "positive"})
        assert r.status_code == 404 and "feedback is off" in r.json()["error"]
