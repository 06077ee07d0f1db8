"""Load against 127.0.0.1: many requests at 32 concurrent clients, zero errors, bounded
server memory. Bounded by default (2,000 requests); set TFLLM_SERVE_LOAD_REQUESTS=10000
for the issue's full acceptance run."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import numpy as np
import pytest

REQUESTS = int(os.environ.get("TFLLM_SERVE_LOAD_REQUESTS", "2000"))
CLIENTS = 32


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_thousands_of_requests_at_32_concurrent_clients_have_no_errors_and_flat_memory(
    tmp_path: Path, write_model_version, start_server, sst2_sentences: list[str],
    in_process_logits,
) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the server's resident memory")
    repo = tmp_path / "repo"
    write_model_version(repo, "sst2", 1)
    server = start_server(repo)
    texts = sst2_sentences[:32]
    want = in_process_logits(repo / "sst2" / "1", texts)
    window = min(1000, REQUESTS // 5)
    errors: list[str] = []
    wrong: list[int] = []
    rss: dict[str, int] = {}
    done = 0

    async def client_loop(client: httpx.AsyncClient, worker: int) -> None:
        nonlocal done
        for i in range(worker, REQUESTS, CLIENTS):
            r = await client.post("/v1/models/sst2:predict",
                                  json={"instances": [texts[i % 32]]})
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text}")
            elif not np.allclose(r.json()["predictions"][0]["logits"], want[i % 32],
                                 atol=1e-5):
                wrong.append(i)
            done += 1
            if done == window:
                rss["after_first_window"] = _rss_kib(server.proc.pid)
            if done == REQUESTS - window:
                rss["before_last_window"] = _rss_kib(server.proc.pid)

    async def run() -> None:
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=server.base, timeout=60, limits=limits) as c:
            await asyncio.gather(*(client_loop(c, w) for w in range(CLIENTS)))

    asyncio.run(run())
    rss["end"] = _rss_kib(server.proc.pid)
    assert errors == [] and wrong == []
    assert done == REQUESTS
    growth = rss["end"] / rss["after_first_window"] - 1
    assert growth < 0.10, rss
