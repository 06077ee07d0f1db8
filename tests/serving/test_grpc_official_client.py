"""gRPC against the official tensorflow-serving-api client (which needs TensorFlow).

The server runs in a subprocess: its protos define the same message names as
TensorFlow's, so the two sets must never share a process (one default descriptor pool).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

grpc = pytest.importorskip("grpc")
tf = pytest.importorskip("tensorflow")
tfs_apis = pytest.importorskip("tensorflow_serving.apis")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

TOKEN = "grpc-test-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, write_model_version) -> Path:
    root = tmp_path_factory.mktemp("grpc") / "repo"
    write_model_version(root, "sst2", 1)
    write_model_version(root, "ner", 1, task="token_classification", id_dtype=np.int32, seed=3)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, start_module_server, tmp_path_factory: pytest.TempPathFactory):
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN)
    return start_module_server(repo, {"models": [{"name": "sst2", "version_labels": {"stable": 1}},
                                                 {"name": "ner"}]},
                               grpc=True, extra_args=["--auth-token-file", str(token_file)])


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        grpc.channel_ready_future(ch).result(timeout=20)
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict_request(name: str, **tensors) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    for key, value in tensors.items():
        req.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return req


def test_official_grpc_client_predict_matches_rest_and_in_process_onnxruntime_on_sst2_dev(
    stub, server, repo: Path, sst2_sentences: list[str], in_process_logits
) -> None:
    import httpx

    texts = sst2_sentences[:32]
    want = in_process_logits(repo / "sst2" / "1", texts)
    resp = stub.Predict(_predict_request("sst2", text=texts), metadata=AUTH, timeout=30)
    logits = tf.make_ndarray(resp.outputs["logits"])
    probs = tf.make_ndarray(resp.outputs["probabilities"])
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert resp.model_spec.name == "sst2" and resp.model_spec.version.value == 1
    rest = httpx.post(f"{server.base}/v1/models/sst2:predict", json={"inputs": {"text": texts}},
                      headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
    np.testing.assert_allclose(rest.json()["outputs"]["logits"], logits, rtol=1e-6, atol=1e-6)


def test_token_id_tensors_of_int32_or_int64_give_the_text_answer(stub, repo: Path) -> None:
    from tokenizers import Tokenizer

    texts = ["a charming film .", "dull"]
    by_text = stub.Predict(_predict_request("sst2", text=texts), metadata=AUTH, timeout=30)
    by_text_logits = tf.make_ndarray(by_text.outputs["logits"])
    tok = Tokenizer.from_file(str(repo / "sst2" / "1" / "tokenizer.json"))
    tok.enable_padding(pad_id=0)
    encs = tok.encode_batch(texts)
    for dtype in (np.int32, np.int64):
        ids = np.array([e.ids for e in encs], dtype=dtype)
        mask = np.array([e.attention_mask for e in encs], dtype=dtype)
        req = _predict_request("sst2", input_ids=ids, attention_mask=mask)
        req.output_filter.append("logits")
        resp = stub.Predict(req, metadata=AUTH, timeout=30)
        assert list(resp.outputs) == ["logits"]
        np.testing.assert_allclose(tf.make_ndarray(resp.outputs["logits"]), by_text_logits,
                                   rtol=1e-5, atol=1e-5)


def test_token_classification_outputs_are_per_token(stub) -> None:
    resp = stub.Predict(_predict_request("ner", text=["the fox", "fox"]), metadata=AUTH,
                        timeout=30)
    assert tf.make_ndarray(resp.outputs["logits"]).shape == (2, 4, 3)


def test_official_client_reads_model_status_and_metadata(stub, channel) -> None:
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "sst2"
    req.model_spec.version_label = "stable"
    status = models.GetModelStatus(req, metadata=AUTH, timeout=30)
    (version_status,) = status.model_version_status
    assert version_status.version == 1
    assert version_status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert version_status.status.error_code == 0

    meta_req = get_model_metadata_pb2.GetModelMetadataRequest()
    meta_req.model_spec.name = "sst2"
    meta_req.metadata_field.append("signature_def")
    meta = stub.GetModelMetadata(meta_req, metadata=AUTH, timeout=30)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(sigs)
    assert sigs.signature_def["serving_default"].inputs["text"].dtype == tf.string.as_datatype_enum
    ids = sigs.signature_def["token_ids"].inputs["input_ids"]
    assert ids.dtype == tf.int64.as_datatype_enum
    assert [d.size for d in ids.tensor_shape.dim] == [-1, -1]
    assert sigs.signature_def["serving_default"].method_name == "tensorflow/serving/predict"


def test_grpc_errors_use_tf_serving_status_codes(stub) -> None:
    cases = [
        (_predict_request("nope", text=["a"]), grpc.StatusCode.NOT_FOUND),
        (_predict_request("sst2", txt=["a"]), grpc.StatusCode.INVALID_ARGUMENT),
        (_predict_request("sst2", text=np.array([1.5], dtype=np.float32)),
         grpc.StatusCode.INVALID_ARGUMENT),
        (_predict_request("sst2", input_ids=np.array([[2, 10**6]], dtype=np.int64)),
         grpc.StatusCode.INVALID_ARGUMENT),
        (_predict_request("sst2", text=[b"\xff\xfe"]), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    versioned = _predict_request("sst2", text=["a"])
    versioned.model_spec.version.value = 7
    cases.append((versioned, grpc.StatusCode.NOT_FOUND))
    for req, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(req, metadata=AUTH, timeout=30)
        assert info.value.code() == code, (req, info.value.details())
        assert info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(_predict_request("sst2", text=["a"]), timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_compiled_protos_match_the_official_field_numbers_and_types() -> None:
    """Our messages, dumped in a TF-free subprocess, against the official descriptors."""
    script = r"""
import json
from tfllm_serving.protos import tf_serving_apis_pb2 as apis
out = {}
def walk(desc):
    out[desc.full_name] = {f.name: [f.number, f.type, f.is_repeated] for f in desc.fields}
    for nested in desc.nested_types:
        walk(nested)
for file in (apis.DESCRIPTOR, *apis.DESCRIPTOR.dependencies):
    for desc in file.message_types_by_name.values():
        walk(desc)
    for svc in file.services_by_name.values():
        out[svc.full_name] = {m.name: [m.input_type.full_name, m.output_type.full_name]
                              for m in svc.methods}
print(json.dumps(out))
"""
    ours = json.loads(subprocess.run([sys.executable, "-c", script], check=True,
                                     capture_output=True, text=True).stdout)
    from google.protobuf import descriptor_pool
    from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

    pool = descriptor_pool.Default()
    services = {
        **{s.full_name: s for s in prediction_service_pb2.DESCRIPTOR.services_by_name.values()},
        **{s.full_name: s for s in model_service_pb2.DESCRIPTOR.services_by_name.values()},
    }

    checked = 0
    for full_name, fields in ours.items():
        if full_name.startswith("google."):
            continue
        if full_name.endswith("Service"):
            official = services[full_name]
            for method, (inp, outp) in fields.items():
                m = official.methods_by_name[method]
                assert [m.input_type.full_name, m.output_type.full_name] == [inp, outp]
            checked += 1
            continue
        official = pool.FindMessageTypeByName(full_name)
        for name, (number, ftype, repeated) in fields.items():
            f = official.fields_by_name[name]
            got = [f.number, f.type, f.is_repeated]
            assert got == [number, ftype, repeated], (full_name, name)
        checked += 1
    assert checked >= 15
