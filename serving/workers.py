"""Several server processes on one port, so that HTTP, JSON and tokenization use every core.

One Python process parses requests and tokenizes on one core at a time (the GIL); with
`workers: N` (default: one per core) uvicorn's own supervisor
(`uvicorn.supervisors.Multiprocess`: spawns, health-checks and replaces dead workers,
forwards SIGTERM/SIGINT for a graceful stop, SIGHUP restarts them one by one) runs N copies
of the ordinary server on the port. The parent binds the port first (so a busy port fails
at once); each worker then listens on a socket of its own bound to it with SO_REUSEPORT, so
the kernel spreads new connections over the workers by their addresses. (One shared socket
does not: the first worker to wake accepts every pending connection, so a burst of
keep-alive clients could all land on one worker.) The price: connections still waiting in a
worker's own queue when it exits (SIGHUP restart, a dead worker replaced) are reset unless
the host sets `net.ipv4.tcp_migrate_req=1` (Linux 5.14+), and a stalled worker keeps getting
its share of new connections until the supervisor replaces it. Each worker is the single-process
server unchanged: its own model manager (hot reload by polling the repository), batcher and
onnxruntime session with cores / N threads, the same auth token, and its gRPC server on the
shared gRPC port (SO_REUSEPORT, gRPC's default on Linux). What they share:

- `/metrics`: prometheus_client's multiprocess mode (a directory of per-process files that
  any worker sums on a scrape), so counters and histograms add up across workers;
- the feedback files (`tfllm_serving.feedback`): one prediction log per worker slot, one
  feedback file appended by all;
- a lock file that lets a lone request run on every core (`tfllm_serving.cores`).

A worker starts taking connections only when its first repository scan is done (its models
loaded or rejected), so no request lands on a worker that is still loading. Later versions
arrive worker by worker (each polls on its own): for up to a poll interval plus the load, a
"latest" request may get the old or the new version, and `versions/N` of the newest may be
404 on one connection and 200 on another; nothing fails.

Example (a repository as `tfllm export` writes it):

    tfllm-serve --model-repo models --workers 2      # or `workers: 2` in the YAML
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import tempfile
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from .config import ServerConfig
from .cores import LOCK_ENV

_CONFIG_ENV = "TFLLM_SERVE_CONFIG_JSON"
_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own switch


def serve_workers(config: ServerConfig) -> None:
    """Bind `config.host:config.port` once and run `config.worker_count()` workers on it
    until SIGINT/SIGTERM."""
    metrics_dir = tempfile.mkdtemp(prefix="tfllm-serve-metrics-")
    # Spawned workers inherit the environment: the config after CLI overrides, and the
    # metrics directory (read by prometheus_client when a worker imports it).
    os.environ[_CONFIG_ENV] = json.dumps(dataclasses.asdict(config))
    os.environ[_METRICS_ENV] = metrics_dir
    os.environ[LOCK_ENV] = os.path.join(metrics_dir, "cores.lock")
    try:
        uv_config = uvicorn.Config(
            "tfllm_serving.workers:worker_app", factory=True, workers=config.worker_count(),
            **server_options(config))
        # Only Linux spreads connections over SO_REUSEPORT sockets (macOS gives them all to
        # one; Windows has none): one shared socket elsewhere.
        sock = (_bind(config.host, config.port) if sys.platform.startswith("linux")
                else uv_config.bind_socket())
        try:
            Multiprocess(uv_config, sockets=[sock]).run()
        finally:
            sock.close()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class BindError(OSError):
    """The port cannot be bound (taken, or an address this host does not have)."""


class _PerWorkerSocket(socket.socket):
    """The port's socket as the parent holds it (bound, never listening); what a worker
    unpickles from it is a new socket bound to the same address with SO_REUSEPORT."""

    def __reduce_ex__(self, protocol: object) -> tuple:
        # Sent to spawned workers by pickle (multiprocessing), which would dup the fd instead.
        return (_reuse_port_socket, (self.family, self.getsockname()))


def _reuse_port_socket(family: int, address: tuple, cls: type = socket.socket) -> socket.socket:
    sock = cls(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return _reuse_port_socket(family, (host, port), cls=_PerWorkerSocket)
    except OSError as exc:
        raise BindError(f"cannot bind {host}:{port}: {exc.strerror}") from exc


def server_options(config: ServerConfig) -> dict[str, Any]:
    """uvicorn settings shared by the one-process server and the workers."""
    return {
        "host": config.host,
        "port": config.port,
        "log_config": None,  # logging.setup_logging owns the handlers (JSON)
        "access_log": False,  # rest.AccessLog writes JSON access lines instead
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
    }


def worker_app() -> Any:
    """In a worker: the ASGI app of one ordinary server, from the parent's config."""
    from .logs import setup_logging
    from .server import ServingServer

    config = ServerConfig.from_dict(json.loads(os.environ[_CONFIG_ENV]))
    setup_logging(config.log_level)
    return ServingServer(config, wait_for_models=True).app
