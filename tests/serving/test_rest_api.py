"""The TF Serving REST API against a real server subprocess on 127.0.0.1, over HTTP."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, write_model_version) -> Path:
    root = tmp_path_factory.mktemp("rest") / "repo"
    write_model_version(root, "sst2", 1)
    write_model_version(root, "ner", 1, task="token_classification", id_dtype=np.int32, seed=3)
    write_model_version(root, "nli", 1, text_pair=True, labels=["entail", "neutral", "contra"])
    return root


@pytest.fixture(scope="module")
def server(repo: Path, start_module_server):
    return start_module_server(repo, {
        "models": [
            {"name": "sst2", "version_labels": {"stable": 1}},
            {"name": "ner"},
            {"name": "nli"},
        ],
        "limits": {"max_body_bytes": 64 * 1024, "max_instances": 64},
        # A short hold so concurrent requests reliably share batches on a fast tiny model.
        "batching": {"batch_timeout_micros": 2000},
    })


@pytest.fixture(scope="module")
def client(server) -> httpx.Client:
    with httpx.Client(base_url=server.base, timeout=30) as c:
        yield c


def test_model_status_version_and_label_routes_answer_tf_serving_json(client) -> None:
    want = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]}
    for path in ("/v1/models/sst2", "/v1/models/sst2/versions/1", "/v1/models/sst2/labels/stable"):
        r = client.get(path)
        assert r.status_code == 200, r.text
        assert r.json() == want


def test_metadata_lists_text_and_token_id_signatures_with_dtypes_and_shapes(client) -> None:
    r = client.get("/v1/models/sst2/versions/1/metadata")
    assert r.status_code == 200
    body = r.json()
    assert body["model_spec"] == {"name": "sst2", "signature_name": "", "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    text = sigs["serving_default"]
    assert text["inputs"]["text"]["dtype"] == "DT_STRING"
    assert text["outputs"]["probabilities"]["tensor_shape"]["dim"][1]["size"] == "2"
    assert sigs["token_ids"]["inputs"]["input_ids"]["dtype"] == "DT_INT64"
    ner = client.get("/v1/models/ner/metadata").json()["metadata"]["signature_def"]
    ner_ids = ner["signature_def"]["token_ids"]["inputs"]["attention_mask"]
    assert ner_ids["dtype"] == "DT_INT32"
    nli = client.get("/v1/models/nli/labels/none/metadata")
    assert nli.status_code == 404


def test_row_and_columnar_predict_match_in_process_onnxruntime_on_sst2_dev(
    client, repo: Path, sst2_sentences: list[str], in_process_logits
) -> None:
    texts = sst2_sentences[:48]
    want = in_process_logits(repo / "sst2" / "1", texts)
    row = client.post("/v1/models/sst2:predict", json={"instances": texts})
    assert row.status_code == 200, row.text
    row_logits = np.array([p["logits"] for p in row.json()["predictions"]])
    np.testing.assert_allclose(row_logits, want, rtol=1e-5, atol=1e-5)
    col = client.post("/v1/models/sst2/versions/1:predict",
                      json={"signature_name": "serving_default", "inputs": {"text": texts}})
    assert col.status_code == 200, col.text
    outputs = col.json()["outputs"]
    np.testing.assert_allclose(outputs["logits"], want, rtol=1e-5, atol=1e-5)
    probs = np.array(outputs["probabilities"])
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert (probs.argmax(1) == want.argmax(1)).all()
    objects = client.post("/v1/models/sst2/labels/stable:predict",
                          json={"instances": [{"text": t} for t in texts[:4]]})
    np.testing.assert_allclose([p["logits"] for p in objects.json()["predictions"]], want[:4],
                               rtol=1e-5, atol=1e-5)


def test_token_id_instances_and_inputs_match_text_instances(client, repo: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(repo / "sst2" / "1" / "tokenizer.json"))
    texts = ["a charming , funny film .", "the worst script ever"]
    encs = [tok.encode(t) for t in texts]
    by_text = client.post("/v1/models/sst2:predict", json={"instances": texts}).json()
    by_ids = client.post("/v1/models/sst2:predict", json={"instances": [
        {"input_ids": e.ids, "attention_mask": e.attention_mask, "token_type_ids": e.type_ids}
        for e in encs
    ]}).json()
    bare_ids = client.post("/v1/models/sst2:predict",
                           json={"instances": [e.ids for e in encs]}).json()
    width = max(len(e.ids) for e in encs)
    padded = [e.ids + [0] * (width - len(e.ids)) for e in encs]
    mask = [[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in encs]
    columnar = client.post("/v1/models/sst2:predict", json={
        "signature_name": "token_ids", "inputs": {"input_ids": padded, "attention_mask": mask}
    }).json()
    want = np.array([p["logits"] for p in by_text["predictions"]])
    for got in ([p["logits"] for p in by_ids["predictions"]],
                [p["logits"] for p in bare_ids["predictions"]],
                columnar["outputs"]["logits"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_classify_returns_label_score_pairs_per_example(client) -> None:
    r = client.post("/v1/models/sst2:classify", json={
        "examples": [{"text": "a fine film ."}, {"text": ["dull and boring"]}],
    })
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert len(result) == 2
    for scores in result:
        assert [label for label, _ in scores] == ["negative", "positive"]
        assert abs(sum(score for _, score in scores) - 1.0) < 1e-5
    pair = client.post("/v1/models/nli:classify", json={
        "context": {"text": "the film is good"},
        "examples": [{"text_pair": "the film is bad"}, {"text_pair": "it is good"}],
    })
    assert pair.status_code == 200, pair.text
    assert [label for label, _ in pair.json()["result"][0]] == ["entail", "neutral", "contra"]


def test_token_classification_returns_per_token_outputs_and_word_labels(client) -> None:
    r = client.post("/v1/models/ner:predict",
                    json={"instances": ["Paris hosts dogs", "the fox"]})
    assert r.status_code == 200, r.text
    first, second = r.json()["predictions"]
    assert first["words"] == ["Paris", "hosts", "dogs"]
    assert set(first["word_labels"]) <= {"O", "B-X", "I-X"}
    assert len(second["logits"]) == 4  # [CLS] the fox [SEP]: cut to its own length
    assert all(len(t) == 3 for t in first["probabilities"])
    col = client.post("/v1/models/ner:predict", json={"inputs": {"text": ["fox", "the fox"]}})
    logits = np.array(col.json()["outputs"]["logits"])
    assert logits.shape == (2, 4, 3)


BAD_REQUESTS = [
    ("sst2:predict", b"{not json", 400),
    ("sst2:predict", b"\xff\xfe\x00garbage", 400),
    ("sst2:predict", json.dumps([1, 2]).encode(), 400),
    ("sst2:predict", json.dumps({"instances": ["a"], "inputs": ["a"]}).encode(), 400),
    ("sst2:predict", json.dumps({"nothing": 1}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": "a film"}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": []}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": [1.5]}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": [[1, 2], "text"]}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": [[2, 99999]]}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": [[-1]]}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": [[True, False]]}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": [{"input_ids": [2, 3],
                                                "attention_mask": [1]}]}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": [{"txt": "a"}]}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": [{"text": 5}]}).encode(), 400),
    ("sst2:predict", json.dumps({"inputs": {"input_ids": [[1, 2], [3]]}}).encode(), 400),
    ("sst2:predict", json.dumps({"inputs": {"text": "not a list"}}).encode(), 400),
    ("sst2:predict", json.dumps({"inputs": 7}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": ["a"], "signature_name": "nope"}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": ["a"] * 65}).encode(), 400),
    ("sst2:predict", json.dumps({"instances": [{"text": "a", "text_pair": "b"}]}).encode(), 400),
    ("nli:predict", json.dumps({"instances": ["only one text"]}).encode(), 400),
    ("ner:classify", json.dumps({"examples": [{"text": "a"}]}).encode(), 400),
    ("sst2:classify", json.dumps({"examples": "a"}).encode(), 400),
    ("sst2:regress", json.dumps({"examples": [{"text": "a"}]}).encode(), 400),
    ("sst2/versions/x:predict", json.dumps({"instances": ["a"]}).encode(), 400),
    ("sst2:predict", b"[" * 100_000 + b"]" * 100_000, 413),
    ("sst2:predict", json.dumps({"instances": ["a" * 70_000]}).encode(), 413),
    ("nope:predict", json.dumps({"instances": ["a"]}).encode(), 404),
    ("sst2/versions/7:predict", json.dumps({"instances": ["a"]}).encode(), 404),
    ("sst2/labels/canary:predict", json.dumps({"instances": ["a"]}).encode(), 404),
    ("sst2:explode", json.dumps({"instances": ["a"]}).encode(), 404),
]


@pytest.mark.parametrize(("path", "body", "status"), BAD_REQUESTS)
def test_bad_requests_answer_the_right_4xx_with_a_json_error(client, path, body, status) -> None:
    r = client.post(f"/v1/models/{path}", content=body,
                    headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_unknown_models_versions_and_routes_answer_404_json(client) -> None:
    for path in ("/v1/models/nope", "/v1/models/sst2/versions/9", "/v1/models/nope/metadata",
                 "/v1/models/sst2/labels/canary", "/v2/health", "/v1/models/a/b/c"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "error" in r.json()
    assert client.put("/v1/models/sst2:predict").status_code == 405
    assert client.get("/v1/models/sst2:predict").json()["error"]


def test_health_readiness_metrics_and_openapi_endpoints(client) -> None:
    assert client.get("/healthz").text == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    client.post("/v1/models/sst2:predict", json={"instances": ["a film"]})
    metrics = client.get("/metrics").text
    assert 'tfllm_serving_requests_total{api="rest",method="predict",model="sst2"' in metrics
    assert "tfllm_serving_request_latency_seconds_bucket" in metrics
    assert 'tfllm_serving_batch_size_count{model="sst2",version="1"}' in metrics
    assert 'tfllm_serving_queue_depth{model="sst2",version="1"}' in metrics
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/v1/models/{name}/versions/{version}:predict" in spec["paths"]


def test_access_log_lines_are_json(client, server) -> None:
    client.get("/healthz")
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "access"]
    assert access and {"method", "path", "status", "ms"} <= set(access[-1])


def test_concurrent_clients_are_batched_and_all_answers_are_correct(
    client, server, repo: Path, sst2_sentences: list[str], in_process_logits
) -> None:
    texts = sst2_sentences[:32]
    want = in_process_logits(repo / "sst2" / "1", texts)

    def ask(i: int) -> np.ndarray:
        r = client.post("/v1/models/sst2:predict", json={"instances": [texts[i % 32]]})
        assert r.status_code == 200, r.text
        return np.array(r.json()["predictions"][0]["logits"])

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(ask, range(160)))
    for i, logits in enumerate(got):
        np.testing.assert_allclose(logits, want[i % 32], rtol=1e-5, atol=1e-5)
    metrics = client.get("/metrics").text
    count = _metric(metrics, 'tfllm_serving_batch_size_count{model="sst2",version="1"}')
    total = _metric(metrics, 'tfllm_serving_batch_size_sum{model="sst2",version="1"}')
    assert total / count > 1.0  # some requests shared a batch


def test_fuzzed_malformed_requests_all_get_4xx_json_and_the_server_still_answers_right(
    client, repo: Path, in_process_logits
) -> None:
    rng = np.random.default_rng(0)
    paths = ["sst2:predict", "sst2:classify", "ner:predict", "nope:predict",
             "sst2/versions/99:predict", "sst2/labels/zz:predict"]
    pieces = [b"{", b"}", b"[", b"]", b'"instances"', b'"inputs"', b":", b",", b"1", b"-3",
              b'"text"', b"null", b"true", b"\xff", b"\xc3\x28", b'"input_ids"', b"1e999",
              b'{"b64": "!!"}', b"NaN"]
    bodies = [b"".join(rng.choice(pieces, size=rng.integers(0, 12))) for _ in range(1000)]
    statuses = []
    for i, body in enumerate(bodies):
        r = client.post(f"/v1/models/{paths[i % len(paths)]}", content=body)
        statuses.append(r.status_code)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert isinstance(r.json()["error"], str)
    assert len(statuses) == 1000
    texts = ["a charming film .", "dull"]
    r = client.post("/v1/models/sst2:predict", json={"instances": texts})
    np.testing.assert_allclose([p["logits"] for p in r.json()["predictions"]],
                               in_process_logits(repo / "sst2" / "1", texts),
                               rtol=1e-5, atol=1e-5)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")
