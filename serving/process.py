"""Run `tfllm-serve` as a child process and wait until it is ready.

For tools that need a live server for a while (quickstart, benchmarks, tests): start it
on a free 127.0.0.1 port, poll `/readyz`, stop it, keep its log.

Example:

    port = free_port()
    with ServerProcess(["--model-repo", "models", "--port", str(port), "--grpc-port", "0"],
                       port, Path("serve.log")) as server:
        server.wait_ready()
        ...  # requests to server.base
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m tfllm_serving.cli ARGS` with stdout/stderr in `log_path`."""

    def __init__(self, args: list[str], port: int, log_path: Path, host: str = "127.0.0.1",
                 grpc_port: int = 0) -> None:
        self.port, self.grpc_port = port, grpc_port
        self.base = f"http://{host}:{port}"
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "tfllm_serving.cli", *args],
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0, workers: int = 1) -> None:
        """Until `/readyz` answers 200 and `workers` worker processes have logged their start;
        raise with the log tail if the server dies or stalls.

        `/readyz` answers from whichever worker is up first, and a worker that starts
        later finds the early keep-alive connections already taken: load that begins before
        every worker is up lands on one process."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tfllm-serve exited {self.proc.returncode}:\n{self.log(4000)}")
            if self._ready() and len(self.started_pids()) >= workers:
                return
            time.sleep(0.1)
        raise TimeoutError(f"tfllm-serve not ready after {timeout} s ({len(self.started_pids())}"
                           f" of {workers} workers started):\n{self.log(4000)}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/readyz", timeout=1.0) as response:
                return response.status == 200
        except OSError:  # refused while starting, or 503 until the models are warm
            return False

    def started_pids(self) -> set[int]:
        """The processes that have logged `"event": "started"` (one per worker)."""
        pids = set()
        for line in self.log().splitlines():
            if line.startswith("{") and '"event": "started"' in line:
                try:
                    pids.add(json.loads(line)["pid"])
                except (ValueError, KeyError):
                    continue
        return pids

    def log(self, tail: int | None = None) -> str:
        """The server's output so far (the last `tail` characters when given)."""
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return text[-tail:] if tail else text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
