"""``tfllm-serve``: serve a TF-Serving-layout model repository with onnxruntime.

    tfllm-serve --model-repo REPO [--host 127.0.0.1] [--port 8501] [--grpc-port 8500]
                [--workers N] [--config configs/serve/default.yaml] [--auth-token-file FILE]

Flags override the YAML config; ``--grpc-port 0`` turns gRPC off.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import ServerConfig
from .logs import setup_logging

log = logging.getLogger("tfllm_serving.cli")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tfllm-serve",
        description="onnxruntime server speaking the TensorFlow Serving REST and gRPC APIs.",
    )
    p.add_argument("--model-repo", help="repository root: REPO/NAME/<version>/model.onnx ...")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="REST port (default 8501)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (default 8500; 0 = off)")
    p.add_argument("--config", help="YAML config, e.g. configs/serve/default.yaml")
    p.add_argument("--workers", type=int,
                   help="server processes on the port (default: one per core; 1 = in this "
                        "process)")
    p.add_argument("--auth-token-file", help="require 'Authorization: Bearer <file content>'")
    p.add_argument("--artifact", help="model_config.json artifact key to serve (default onnx)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return p


def load_config(args: argparse.Namespace) -> ServerConfig:
    cfg = ServerConfig.from_yaml(args.config) if args.config else ServerConfig()
    for flag, attr in (
        ("model_repo", "model_repo"), ("host", "host"), ("port", "port"),
        ("grpc_port", "grpc_port"), ("auth_token_file", "auth_token_file"),
        ("artifact", "artifact"), ("log_level", "log_level"), ("workers", "workers"),
    ):
        value = getattr(args, flag)
        if value is not None:
            setattr(cfg, attr, value)
    if not cfg.model_repo:
        raise ValueError("--model-repo (or model_repo in the config) is required")
    cfg.validate()
    return cfg


def check_model_repo(cfg: ServerConfig) -> None:
    """The repository must exist when the server starts (load_config only parses)."""
    if not Path(str(cfg.model_repo)).is_dir():
        raise ValueError(
            f"model repository not found: {cfg.model_repo} (expected REPO/NAME/VERSION/)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, load the config and serve until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args)
        check_model_repo(cfg)
        setup_logging(cfg.log_level)
        from .server import ServingServer

        if cfg.worker_count() > 1:
            cfg.read_auth_token()  # a bad token file stops here, not in every worker
            server = None
        else:
            server = ServingServer(cfg)
    except (OSError, ValueError) as exc:
        print(f"tfllm-serve: error: {exc}", file=sys.stderr)
        return 2
    try:
        if not ipaddress.ip_address(cfg.host).is_loopback:
            log.warning("listening beyond this machine", extra={"host": cfg.host,
                        "auth": cfg.auth_token_file is not None})
    except ValueError:
        pass  # a host name: the operator chose it
    try:
        if server is None:
            from .workers import BindError, serve_workers

            try:
                serve_workers(cfg)
            except BindError as exc:  # the parent binds the port before any worker starts
                print(f"tfllm-serve: error: {exc}", file=sys.stderr)
                return 2
        else:
            server.run()
    except KeyboardInterrupt:
        # uvicorn re-raises the captured SIGINT once its graceful shutdown is done.
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
