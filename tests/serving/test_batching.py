"""The dynamic batcher on its own: merging, back-pressure, batching off, draining."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from tfllm_serving.batching import DynamicBatcher, WorkerPool
from tfllm_serving.errors import QueueFull


class Recorder:
    """run_many that records the batch sizes and can be held closed by a gate."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, items: Sequence[list[int]]) -> list[int]:
        self.gate.wait(5)
        self.batches.append(sum(len(i) for i in items))
        return [sum(i) for i in items]


@pytest.fixture
def pool():
    p = WorkerPool(1)
    yield p
    p.shutdown()


def test_concurrent_requests_merge_into_one_batch_up_to_max_batch_size(pool: WorkerPool) -> None:
    run = Recorder()
    batcher = DynamicBatcher(run, len, pool, max_batch_size=8, batch_timeout_micros=200_000)
    futures = [batcher.submit([i, 1]) for i in range(6)]  # 12 rows
    assert [f.result(5) for f in futures] == [i + 1 for i in range(6)]
    assert run.batches == [8, 4]
    batcher.close()


def test_a_lone_request_waits_at_most_the_batch_timeout(pool: WorkerPool) -> None:
    batcher = DynamicBatcher(Recorder(), len, pool, max_batch_size=64, batch_timeout_micros=20_000)
    started = time.monotonic()
    assert batcher.submit([2, 3]).result(5) == 5
    assert time.monotonic() - started < 1.0
    batcher.close()


def test_full_queue_raises_queue_full_with_a_clear_message(pool: WorkerPool) -> None:
    run = Recorder()
    run.gate.clear()  # hold the worker so the queue fills up
    batcher = DynamicBatcher(run, len, pool, max_batch_size=2, batch_timeout_micros=0,
                             max_enqueued_batches=2)
    accepted = []
    with pytest.raises(QueueFull, match="batch queue is full"):
        for _ in range(20):
            accepted.append(batcher.submit([1, 1]))
    run.gate.set()
    assert all(f.result(5) == 2 for f in accepted)
    batcher.close()


def test_batching_off_runs_each_request_alone_with_back_pressure(pool: WorkerPool) -> None:
    run = Recorder()
    batcher = DynamicBatcher(run, len, pool, max_batch_size=8, enabled=False,
                             max_enqueued_batches=1)
    assert [batcher.submit([i]).result(5) for i in range(3)] == [0, 1, 2]
    assert run.batches == [1, 1, 1]
    run.gate.clear()
    held = [batcher.submit([1]), batcher.submit([1])]  # 1 running + 1 queued = the limit
    with pytest.raises(QueueFull, match="in flight"):
        batcher.submit([1])
    run.gate.set()
    assert [f.result(5) for f in held] == [1, 1]


def test_a_closed_batcher_drains_its_queue_and_still_answers_late_requests(
    pool: WorkerPool,
) -> None:
    run = Recorder()
    run.gate.clear()
    batcher = DynamicBatcher(run, len, pool, max_batch_size=4, batch_timeout_micros=0)
    queued = [batcher.submit([1, 2]) for _ in range(3)]
    batcher.close()
    late = batcher.submit([5])
    run.gate.set()
    assert [f.result(5) for f in queued] == [3, 3, 3]
    assert late.result(5) == 5


def test_errors_in_a_batch_reach_every_caller(pool: WorkerPool) -> None:
    def boom(items):
        raise RuntimeError("session failed")

    batcher = DynamicBatcher(boom, len, pool, max_batch_size=4, batch_timeout_micros=50_000)
    futures = [batcher.submit([1]) for _ in range(3)]
    for f in futures:
        with pytest.raises(RuntimeError, match="session failed"):
            f.result(5)
    batcher.close()
