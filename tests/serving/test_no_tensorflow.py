"""tfllm_serving runs where TensorFlow is absent: a subprocess blocks every TensorFlow /
tfllm import, starts the real CLI (REST + gRPC), answers both, and lists what it loaded."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import importlib.abc, json, os, signal, sys, threading, time, urllib.request

BLOCKED = ("tensorflow", "tensorflow_serving", "tensorflow_text", "keras", "tfllm",
           "tfllm_export", "tf_keras")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked for this test: {name}")
        return None

sys.meta_path.insert(0, Block())
from tfllm_serving.cli import main

repo, port, grpc_port = sys.argv[1:4]
result = {}

def probe():
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(400):
            try:
                if urllib.request.urlopen(base + "/readyz").status == 200:
                    break
            except Exception:
                time.sleep(0.05)
        req = urllib.request.Request(
            base + "/v1/models/sst2:predict",
            data=json.dumps({"instances": ["a film"]}).encode(),
            headers={"content-type": "application/json"})
        result["rest"] = json.load(urllib.request.urlopen(req))
        import grpc
        from tfllm_serving.protos import tf_framework_pb2 as fw
        from tfllm_serving.protos import tf_serving_apis_pb2 as apis
        from tfllm_serving.protos import tf_serving_apis_pb2_grpc as apis_grpc
        request = apis.PredictRequest()
        request.model_spec.name = "sst2"
        text = request.inputs["text"]
        text.dtype = fw.DT_STRING
        text.tensor_shape.dim.add(size=1)
        text.string_val.append(b"a film")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            resp = apis_grpc.PredictionServiceStub(ch).Predict(request, timeout=30)
        result["grpc_outputs"] = sorted(resp.outputs)
    except Exception as exc:
        result["error"] = repr(exc)
    finally:
        os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=probe, daemon=True).start()
result["rc"] = main(["--model-repo", repo, "--port", port, "--grpc-port", grpc_port])
result["blocked_modules_loaded"] = sorted(
    m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("RESULT " + json.dumps(result))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_starts_and_answers_rest_and_grpc_without_ever_importing_tensorflow(
    tmp_path: Path, write_model_version
) -> None:
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(repo), str(_free_port()), str(_free_port())],
        capture_output=True, text=True, timeout=120,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    result = json.loads(lines[-1][len("RESULT "):])
    assert "error" not in result, result["error"] + proc.stderr[-3000:]
    assert result["rc"] == 0
    assert len(result["rest"]["predictions"]) == 1
    assert result["grpc_outputs"] == ["logits", "probabilities"]
    assert result["blocked_modules_loaded"] == []
