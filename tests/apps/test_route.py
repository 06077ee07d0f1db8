"""`tfllm route` on real BANKING77 messages with a fine-tuned MiniLM intent model."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.apps.conftest import B77_INTENTS
from tfllm.apps.classify import load_classifier
from tfllm.apps.route import build_app, load_route_table
from tfllm.cli import main
from tfllm.errors import InputError

ROUTES = {"threshold": 0.6, "human_queue": "human-review", "default": "general-support",
          "queues": {"cards": ["card_arrival", "lost_or_stolen_card"],
                     "payments": ["pending_transfer", "top_up_failed"]}}


@pytest.fixture()
def routes(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(ROUTES))
    return path


def test_batch_routing_reports_accuracy_and_human_share_on_the_banking77_test_rows(
        tmp_path, b77_repo, routes, capsys):
    out = tmp_path / "routed.jsonl"
    assert main(["route", "--model", str(b77_repo["repo"]), "--routes", str(routes), "--input",
                 str(b77_repo["test"]), "--text-column", "text", "--label-column", "category",
                 "--out", str(out), "--report", str(tmp_path / "report")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == printed["messages"] == 6 * 40
    report = json.loads((tmp_path / "report" / "route_report.json").read_text())
    assert report["intent_accuracy"] > 0.8  # six intents, a real (short) fine-tune
    assert 0.0 <= report["human_share"] < 0.5 and report["auto_route_accuracy"] > 0.85
    assert (tmp_path / "report" / "threshold_sweep.png").stat().st_size > 10_000
    shares = [s["human_share"] for s in report["sweep"]]
    assert shares == sorted(shares) and shares[0] == 0.0  # more threshold, more humans
    for row in rows:  # below the threshold -> the human queue; above -> the intent's queue
        expected = "human-review" if row["confidence"] < 0.6 else (
            {i: q for q, v in ROUTES["queues"].items() for i in v}.get(row["intent"],
                                                                       "general-support"))
        assert row["route"] == expected and row["to_human"] == (expected == "human-review")
    assert {r["route"] for r in rows} >= {"cards", "payments", "general-support"}


def test_a_message_below_the_threshold_goes_to_the_human_queue(b77_repo, routes):
    classifier = load_classifier(str(b77_repo["repo"]))
    table = load_route_table(routes, classifier.labels)
    text = "I still have not received my new card, I ordered over a week ago."
    confident = classifier.predict([text])[0].max()
    assert table.route("card_arrival", confident) == "cards"
    strict = load_route_table(routes, classifier.labels, threshold=min(1.0, confident + 1e-3))
    from tfllm.apps.route import route_texts

    row = route_texts(classifier, strict, [text])[0]
    assert row["intent"] == "card_arrival" and row["route"] == "human-review" and row["to_human"]


def test_the_rest_endpoint_routes_and_rejects_bad_bodies(b77_repo, routes):
    from starlette.testclient import TestClient

    classifier = load_classifier(str(b77_repo["repo"]))
    client = TestClient(build_app(classifier, load_route_table(routes, classifier.labels),
                                  max_texts=4))
    answer = client.post("/route", json={"texts": ["my card has not arrived yet",
                                                   "I want to close my account"]})
    assert answer.status_code == 200
    assert [r["intent"] for r in answer.json()["routes"]] == ["card_arrival", "terminate_account"]
    assert client.post("/route", content=b"{oops").status_code == 400
    assert client.post("/route", json={"texts": ["a"] * 5}).status_code == 400
    assert client.post("/route", json={"texts": [1]}).status_code == 400
    assert client.get("/healthz").json()["status"] == "ok"


def test_a_route_table_naming_an_unknown_intent_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"queues": {"cards": ["card_arival"]}}))
    with pytest.raises(InputError, match="intent 'card_arival' is not one of the model's labels"):
        load_route_table(bad, B77_INTENTS)
    twice = tmp_path / "twice.yaml"
    twice.write_text(yaml.safe_dump({"queues": {"a": ["card_arrival"], "b": ["card_arrival"]}}))
    with pytest.raises(InputError, match="in both 'a' and 'b'"):
        load_route_table(twice, B77_INTENTS)


def test_the_shipped_banking77_table_covers_all_77_intents(data_dir):
    intents = json.loads((data_dir / "banking77" / "categories.json").read_text())
    table = load_route_table("configs/route/banking77.yaml", intents)
    assert sorted(table.by_intent) == sorted(intents)
