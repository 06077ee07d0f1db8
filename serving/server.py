"""Wires one server from a :class:`ServerConfig`: metrics, model manager, REST app and
(when ``grpc_port`` is set) the gRPC server, started and stopped with the app's lifespan.

    server = ServingServer(ServerConfig(model_repo="repo", port=8501, grpc_port=8500))
    server.run()  # blocks until SIGINT/SIGTERM
"""

from __future__ import annotations

import logging
from typing import Any

import uvicorn

from .config import ServerConfig
from .manager import ModelManager
from .metrics import ServingMetrics
from .rest import create_app
from .workers import server_options

log = logging.getLogger(__name__)


class ServingServer:
    """Everything one ``tfllm-serve`` process runs."""

    def __init__(self, config: ServerConfig, wait_for_models: bool = False) -> None:
        # wait_for_models: start answering only after the first repository scan (a worker
        # among several: the others take the traffic meanwhile).
        self.config, self.wait_for_models = config, wait_for_models
        self.metrics = ServingMetrics()
        self.manager = ModelManager(config, self.metrics)
        self.auth_token = config.read_auth_token()
        self.grpc: Any = None
        self.app = create_app(
            self.manager, config, self.auth_token,
            on_startup=[self._start], on_shutdown=[self._stop],
        )

    def _start(self) -> None:
        self.manager.start()
        if self.wait_for_models:
            self.manager.wait_scanned()
        if self.config.grpc_port:
            # Imported only here: the generated protos define TF's message names.
            from .grpc_server import GrpcServer

            self.grpc = GrpcServer(self.manager, self.config, self.auth_token)
            self.grpc.start()
        log.info(
            "serving",
            extra={"event": "started", "host": self.config.host, "port": self.config.port,
                   "grpc_port": self.config.grpc_port, "model_repo": self.config.model_repo},
        )

    def _stop(self) -> None:
        if self.grpc is not None:
            self.grpc.stop()
        self.manager.stop()

    def uvicorn_config(self) -> uvicorn.Config:
        return uvicorn.Config(self.app, **server_options(self.config))

    def run(self) -> None:
        uvicorn.Server(self.uvicorn_config()).run()
