"""Limits and safety: bearer token, sequence-length policy, queue-full and timeout
answers, loopback default, CLI errors."""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from tfllm_serving.cli import build_parser, load_config, main
from tfllm_serving.config import ServerConfig
from tfllm_serving.errors import QueueFull
from tfllm_serving.server import ServingServer


def test_bearer_token_is_required_except_on_probes(
    tmp_path: Path, write_model_version, start_server
) -> None:
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    server = start_server(repo, extra_args=["--auth-token-file", str(token_file)])
    body = {"instances": ["a film"]}
    with httpx.Client(base_url=server.base, timeout=30) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"},
                        {"authorization": "Basic s3cret-token"}):
            r = c.post("/v1/models/sst2:predict", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]
            assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/metrics").status_code == 401
        good = {"authorization": "Bearer s3cret-token"}
        assert c.post("/v1/models/sst2:predict", json=body, headers=good).status_code == 200
        assert c.get("/metrics", headers=good).status_code == 200


def test_over_length_input_is_rejected_with_400_when_configured(
    tmp_path: Path, write_model_version, start_server
) -> None:
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    server = start_server(repo, {"limits": {"over_length": "reject", "max_sequence_length": 16}})
    with httpx.Client(base_url=server.base, timeout=30) as c:
        ok = c.post("/v1/models/sst2:predict", json={"instances": ["a good film"]})
        assert ok.status_code == 200
        long_text = c.post("/v1/models/sst2:predict", json={"instances": ["film " * 20]})
        assert long_text.status_code == 400
        assert "max sequence length 16" in long_text.json()["error"]
        long_ids = c.post("/v1/models/sst2:predict", json={"instances": [[2] + [6] * 20 + [3]]})
        assert long_ids.status_code == 400


@pytest.fixture
def in_process_server(tmp_path: Path, write_model_version):
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    cfg = ServerConfig(model_repo=str(repo), grpc_port=None,
                       file_system_poll_wait_seconds=0.1)
    cfg.limits.request_timeout_seconds = 0.3
    server = ServingServer(cfg)
    with TestClient(server.app) as client:
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield server, client


def test_full_batch_queue_answers_503_and_a_stuck_request_504(in_process_server) -> None:
    server, client = in_process_server
    servable = server.manager.resolve("sst2")

    def full(batch):
        raise QueueFull("model sst2 version 1: batch queue is full; retry later")

    servable.batcher.submit = full
    r = client.post("/v1/models/sst2:predict", json={"instances": ["a film"]})
    assert r.status_code == 503
    assert "queue is full" in r.json()["error"]

    servable.batcher.submit = lambda batch: Future()  # never answers
    r = client.post("/v1/models/sst2:predict", json={"instances": ["a film"]})
    assert r.status_code == 504
    assert "timeout" in r.json()["error"]


def test_binds_loopback_by_default_and_flags_override_the_yaml(tmp_path: Path) -> None:
    cfg_file = tmp_path / "serve.yaml"
    cfg_file.write_text("port: 9000\nbatching: {max_batch_size: 4}\n")
    args = build_parser().parse_args(["--model-repo", "r", "--config", str(cfg_file),
                                      "--port", "9100"])
    cfg = load_config(args)
    assert cfg.host == "127.0.0.1"
    assert (cfg.port, cfg.batching.max_batch_size, cfg.grpc_port) == (9100, 4, 8500)


def test_cli_reports_config_errors_with_exit_status_2(tmp_path: Path, capsys) -> None:
    assert main([]) == 2
    assert "--model-repo" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits: {over_length: explode}\n")
    assert main(["--model-repo", str(tmp_path), "--config", str(bad)]) == 2
    assert "over_length" in capsys.readouterr().err
