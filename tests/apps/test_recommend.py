"""`tfllm recommend` on a 50-user slice of MovieLens: the leave-last-out split, item-kNN
against a dense cosine computed here, no tag from after the held-out ratings in the item
text, the hybrid chosen on validation, both protocols in the report, and `POST /recommend`
(bad bodies answer 4xx JSON). Item text is embedded by the tiny exported embedder."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from starlette.testclient import TestClient

from tfllm.apps.recommend import (
    build_app,
    item_knn,
    item_texts,
    leave_last_out,
    load_recommender,
    read_catalog,
)
from tfllm.cli import main


@pytest.fixture(scope="module")
def movielens_slice(tmp_path_factory, data_dir):
    source = data_dir / "movielens_small"
    root = tmp_path_factory.mktemp("movielens")
    lines = (source / "ratings.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (root / "ratings.csv").write_text(
        "".join(lines[:1] + [x for x in lines[1:] if int(x.split(",")[0]) <= 50]),
        encoding="utf-8")
    return {"ratings": root / "ratings.csv", "items": source / "movies.csv",
            "tags": source / "tags.csv", "root": root}


@pytest.fixture(scope="module")
def report(movielens_slice, tiny_embedder):
    out = movielens_slice["root"] / "report"
    assert main(["recommend", "--ratings", str(movielens_slice["ratings"]), "--items",
                 str(movielens_slice["items"]), "--tags", str(movielens_slice["tags"]),
                 "--model", str(tiny_embedder["repo"] / "emb"), "--report", str(out)]) == 0
    return out


def test_the_held_out_item_is_each_users_last_rating_by_time_then_movie_id(movielens_slice):
    catalog = read_catalog(movielens_slice["ratings"], movielens_slice["items"])
    with movielens_slice["ratings"].open(newline="") as f:
        rows = [(int(r["userId"]), int(r["timestamp"]), int(r["movieId"]))
                for r in csv.DictReader(f)]
    test, valid = leave_last_out(catalog, 1), leave_last_out(catalog, 2)
    for u, user in enumerate(catalog.user_ids):
        mine = sorted((t, m) for who, t, m in rows if who == user)
        assert catalog.item_ids[test.held_out[u]] == mine[-1][1]
        assert catalog.item_ids[valid.held_out[u]] == mine[-2][1]
        assert len(test.history[u]) == len(mine) - 1 and len(valid.history[u]) == len(mine) - 2


def test_item_knn_sums_the_cosines_of_co_rating_columns(movielens_slice):
    catalog = read_catalog(movielens_slice["ratings"], movielens_slice["items"])
    split = leave_last_out(catalog, 1)
    rated = np.unique(np.concatenate(split.history))  # the other columns score 0
    column = {item: j for j, item in enumerate(rated)}
    dense = np.zeros((len(split.history), len(rated)))
    for u, items in enumerate(split.history):
        dense[u, [column[i] for i in items]] = 1.0
    norms = np.linalg.norm(dense, axis=0)
    cosine = (dense.T @ dense) / np.outer(norms, norms)
    expected = np.zeros((len(split.history), catalog.n_items))
    for u, items in enumerate(split.history):
        expected[u, rated] = cosine[[column[i] for i in items]].sum(0)
    np.testing.assert_allclose(item_knn(split, catalog.n_items), expected, rtol=1e-5, atol=1e-5)


def test_item_text_keeps_only_tags_written_before_the_cut(movielens_slice):
    catalog = read_catalog(movielens_slice["ratings"], movielens_slice["items"])
    cut = 1_300_000_000
    texts = dict(zip(catalog.item_ids, item_texts(catalog, movielens_slice["tags"], cut),
                     strict=True))
    with movielens_slice["tags"].open(newline="") as f:
        tags = list(csv.DictReader(f))
    late = [t for t in tags if int(t["timestamp"]) >= cut and not any(
        u["movieId"] == t["movieId"] and u["tag"].lower() == t["tag"].lower()
        and int(u["timestamp"]) < cut for u in tags)]
    early = [t for t in tags if int(t["timestamp"]) < cut]
    assert late and early

    def tags_of(movie: str) -> list[str]:
        parts = texts[int(movie)].split(" | ")
        return [x.lower() for x in parts[2].split(", ")] if len(parts) > 2 else []

    assert all(t["tag"].lower() not in tags_of(t["movieId"]) for t in late)
    assert all(t["tag"].lower() in tags_of(t["movieId"]) for t in early if ", " not in t["tag"])
    assert texts[1].startswith("Toy Story (1995) | Adventure, Animation, Children")


def test_the_report_scores_every_method_under_both_protocols_with_the_validation_choice(report):
    data = json.loads((report / "recommend_report.json").read_text())
    assert set(data["methods"]) == {"popularity", "item-knn", "content", "hybrid"}
    assert data["users"] == 50 and data["items"] == 9742
    for scores in data["methods"].values():
        assert 0 <= scores["ndcg@10"] <= scores["hr@10"] <= 1
        assert scores["cold"]["users"] == scores["cold_sampled"]["users"] == data["cold_users"]
        assert scores["cold_sampled"]["hr@10"] >= scores["cold"]["hr@10"]  # 101 vs ~9,700 items
    grid = data["validation_grid"]
    qualified = [r for r in grid if r["cold_sampled"]["hr@10"] >= 0.25] or grid
    best = max(qualified, key=lambda r: (r["ndcg@10"], r["cold_sampled"]["hr@10"]))
    assert best["config"] == data["hybrid"] and len(grid) == 4 * 13
    assert (report / "recommend_report.png").stat().st_size > 0
    assert np.load(report / "item_embeddings.npy").shape == (9742, 32)


def test_recommend_endpoint_answers_unseen_items_and_refuses_bad_bodies(report, movielens_slice):
    client = TestClient(build_app(load_recommender(movielens_slice["ratings"],
                                                   movielens_slice["items"], report),
                                  max_history=5, max_k=20, max_body=2048))
    history = [1, 260, 1196]  # Toy Story, Star Wars IV and V
    answer = client.post("/recommend", json={"history": history, "k": 5})
    assert answer.status_code == 200
    items = answer.json()["items"]
    assert len(items) == 5 and not {i["id"] for i in items} & set(history)
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    for body, status in [(b"{oops", 400), (b'{"history": []}', 400),
                         (b'{"history": ["1"]}', 400), (b'{"history": [1], "k": 0}', 400),
                         (b'{"history": [1, 2], "ratings": [5]}', 400),
                         (b'{"history": [1, 2, 3, 4, 5, 6]}', 400),
                         (b'{"history": [999999999]}', 400),
                         (b'{"history": [' + b"1, " * 800 + b'1]}', 413)]:
        reply = client.post("/recommend", content=body)
        assert reply.status_code == status, body[:40]
        assert "error" in reply.json()


@pytest.mark.parametrize("row,message", [
    ("1,1,four,964982703", "ratings.csv:3: could not convert string to float: 'four'"),
    ("1,123456789,4.0,964982703", "ratings.csv:3: movieId 123456789 is not in"),
    ("1,,4.0,964982703", "ratings.csv:3: empty 'movieId'"),
])
def test_a_bad_ratings_row_exits_2_naming_file_and_line_and_writes_no_report(
        tmp_path, data_dir, tiny_embedder, capsys, row, message):
    (tmp_path / "ratings.csv").write_text(
        f"userId,movieId,rating,timestamp\n1,1,4.0,964982703\n{row}\n", encoding="utf-8")
    assert main(["recommend", "--ratings", str(tmp_path / "ratings.csv"), "--items",
                 str(data_dir / "movielens_small" / "movies.csv"), "--model",
                 str(tiny_embedder["repo"] / "emb"), "--report", str(tmp_path / "report")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
