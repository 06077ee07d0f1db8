"""Several worker processes on one port (`workers: N`): every worker answers, metrics add
up across them, hot reload, auth and feedback hold in each, SIGTERM lets requests that are
in flight finish."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tfllm_serving.config import ServerConfig, available_cpus

WORKERS = 2


def _fresh(server, method: str, path: str, **kwargs) -> httpx.Response:
    """One request on a new connection: the kernel hands it to whichever worker accepts."""
    with httpx.Client(base_url=server.base, timeout=30) as client:
        return client.request(method, path, **kwargs)


def _access_pids(server) -> set[int]:
    return {json.loads(line)["pid"] for line in server.log().splitlines()
            if line.startswith("{") and '"event": "access"' in line}


def _counter(metrics: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(prefix))


def test_worker_count_defaults_to_the_cores_and_feedback_without_texts_keeps_one() -> None:
    assert ServerConfig().worker_count() == available_cpus()
    assert ServerConfig(workers=3).worker_count() == 3
    assert ServerConfig.from_dict({"feedback": {"enabled": True}}).worker_count() == 1
    with pytest.raises(ValueError, match="log_text"):
        ServerConfig.from_dict({"workers": 2, "feedback": {"enabled": True}})
    with pytest.raises(ValueError, match="workers must be >= 0"):
        ServerConfig.from_dict({"workers": -1})
    # each worker's threads share the cores instead of each taking all of them
    cfg = ServerConfig(workers=available_cpus())
    assert cfg.batch_threads() * cfg.intra_op_threads() == 1


def test_workers_share_the_port_and_their_metrics_add_up(
    tmp_path: Path, write_model_version, start_server, sst2_sentences: list[str],
) -> None:
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    server = start_server(repo, {"workers": WORKERS}, grpc=True)
    sent = 40
    for i in range(sent):
        r = _fresh(server, "POST", "/v1/models/sst2:predict",
                   json={"instances": [sst2_sentences[i]]})
        assert r.status_code == 200, r.text
    assert len(_access_pids(server)) == WORKERS
    metrics = _fresh(server, "GET", "/metrics").text
    total = 'tfllm_serving_requests_total{api="rest",method="predict",model="sst2",status="200"'
    assert _counter(metrics, total) == sent
    assert _counter(metrics, 'tfllm_serving_batch_size_count{model="sst2"') >= sent / 32
    assert 'tfllm_serving_queue_depth{model="sst2",version="1"} 0.0' in metrics
    loads = 'tfllm_serving_model_loads_total{model="sst2",outcome="loaded",version="1"}'
    assert _counter(metrics, loads) == WORKERS  # one load per worker


def test_a_burst_of_keep_alive_connections_is_spread_over_the_workers(
    tmp_path: Path, write_model_version, start_server,
) -> None:
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    server = start_server(repo, {"workers": WORKERS})
    clients = 16
    # A worker that is busy (here: stopped) while the burst arrives: with one shared
    # socket the other worker would accept every connection and keep them all.
    paused = min(server.started_pids())

    async def burst() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits) as c:
            os.kill(paused, signal.SIGSTOP)
            try:
                first = asyncio.gather(
                    *(c.get("/v1/models/sst2/metadata") for _ in range(clients)))
                await asyncio.sleep(0.5)
            finally:
                os.kill(paused, signal.SIGCONT)
            assert [r.status_code for r in await first] == [200] * clients
            for _ in range(2):  # the same connections, kept alive
                answers = await asyncio.gather(
                    *(c.get("/v1/models/sst2/metadata") for _ in range(clients)))
                assert [r.status_code for r in answers] == [200] * clients

    asyncio.run(burst())
    lines = [json.loads(line) for line in server.log().splitlines()
             if line.startswith("{") and '"path": "/v1/models/sst2/metadata"' in line]
    assert len(lines) == 3 * clients
    assert len({line["client"] for line in lines}) == clients  # each connection kept
    # SO_REUSEPORT hashes each connection to one worker: all 16 on one has odds 2**-15.
    assert len({line["pid"] for line in lines}) == WORKERS


def test_a_taken_port_is_a_clear_error_before_any_worker_starts(
    tmp_path: Path, write_model_version,
) -> None:
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tfllm_serving.cli", "--model-repo", str(repo), "--port",
             str(port), "--grpc-port", "0", "--workers", str(WORKERS)],
            capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"cannot bind 127.0.0.1:{port}" in done.stderr
    assert '"event": "started"' not in done.stdout + done.stderr


def test_every_worker_checks_the_token_and_takes_a_new_version(
    tmp_path: Path, write_model_version, start_server,
) -> None:
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    server = start_server(repo, {"workers": WORKERS},
                          extra_args=["--auth-token-file", str(token)])
    auth = {"Authorization": "Bearer s3cret"}
    for _ in range(12):
        assert _fresh(server, "GET", "/v1/models/sst2").status_code == 401
        assert _fresh(server, "GET", "/v1/models/sst2", headers=auth).status_code == 200
    write_model_version(repo, "sst2", 2, seed=5)
    deadline, streak = time.monotonic() + 30, 0
    while streak < 16:  # consecutive fresh connections all on version 2
        assert time.monotonic() < deadline, server.log(4000)
        r = _fresh(server, "GET", "/v1/models/sst2/metadata", headers=auth)
        streak = streak + 1 if r.json()["model_spec"]["version"] == "2" else 0
    assert len(_access_pids(server)) == WORKERS


def test_feedback_naming_an_id_finds_it_whichever_worker_answered(
    tmp_path: Path, write_model_version, start_server,
) -> None:
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    folder = tmp_path / "feedback"
    server = start_server(repo, {"workers": WORKERS, "feedback": {
        "enabled": True, "log_dir": str(folder), "log_text": True}})
    for i in range(16):
        r = _fresh(server, "POST", "/v1/models/sst2:predict",
                   json={"instances": [f"film number {i}"]})
        answer = _fresh(server, "POST", "/v1/models/sst2:feedback",
                        json={"id": r.headers["X-Request-Id"] + "-0", "label": "negative"})
        assert answer.status_code == 200, answer.text
    lines = (folder / "feedback.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["text"] for line in lines) == sorted(
        f"film number {i}" for i in range(16))
    assert sorted(p.name for p in folder.glob("predictions*.jsonl")) == [
        "predictions-w1.jsonl", "predictions.jsonl"]


def test_sigterm_lets_every_request_in_flight_finish(
    tmp_path: Path, write_model_version, start_server,
) -> None:
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    server = start_server(repo, {"workers": WORKERS})
    body = json.dumps({"instances": ["a fine film"]}).encode()
    half = len(body) // 2
    # Requests whose headers and half a body are in when SIGTERM arrives: in flight.
    sockets = []
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"POST /v1/models/sst2:predict HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:half])
        sockets.append(s)
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    answers = []
    for s in sockets:
        s.sendall(body[half:])
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        answers.append(data.split(b"\r\n", 1)[0])
    assert answers == [b"HTTP/1.1 200 OK"] * 8, server.log(4000)
    assert server.proc.wait(timeout=20) == 0
