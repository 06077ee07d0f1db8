"""Load against 127.0.0.1: many requests at 32 concurrent clients over the default worker
processes (one per core), a new version written halfway, zero errors, every answer from
one of the two versions, bounded server memory. Bounded by default (2,000 requests); set
TFLLM_SERVE_LOAD_REQUESTS=10000 for the issue's full acceptance run."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from tfllm_serving.config import ServerConfig

REQUESTS = int(os.environ.get("TFLLM_SERVE_LOAD_REQUESTS", "2000"))
CLIENTS = 32


def _rss_kib(pid: int) -> int:
    """Resident memory of `pid` and every process under it (the workers)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        for line in Path(f"/proc/{current}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
        for task in Path(f"/proc/{current}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return total


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
    write_model_version(tmp_path / "next", "sst2", 2, seed=7)
    want_next = in_process_logits(tmp_path / "next" / "sst2" / "2", texts)
    window = min(1000, REQUESTS // 5)
    errors: list[str] = []
    wrong: list[int] = []
    rss: dict[str, int] = {}
    done = from_next = 0

    async def client_loop(client: httpx.AsyncClient, worker: int) -> None:
        nonlocal done, from_next
        for i in range(worker, REQUESTS, CLIENTS):
            r = await client.post("/v1/models/sst2:predict",
                                  json={"instances": [texts[i % 32]]})
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text}")
            else:
                got = r.json()["predictions"][0]["logits"]
                if np.allclose(got, want_next[i % 32], atol=1e-5):
                    from_next += 1
                elif not np.allclose(got, want[i % 32], atol=1e-5):
                    wrong.append(i)
            done += 1
            if done == REQUESTS // 2:  # the swap: v2 appears whole (the export stage's rename)
                (tmp_path / "next" / "sst2" / "2").rename(repo / "sst2" / "2")
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
    assert from_next > 0  # the new version took over within the run
    answered_by = {json.loads(line)["pid"] for line in server.log().splitlines()
                   if line.startswith("{") and '"event": "access"' in line}
    assert len(answered_by) == ServerConfig().worker_count()  # every worker took requests
    growth = rss["end"] / rss["after_first_window"] - 1
    assert growth < 0.10, rss
