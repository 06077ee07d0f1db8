"""Dynamic batching: requests queue, merge up to ``max_batch_size`` rows or
``batch_timeout_micros``, and run on one thread pool shared by every model version
(TF Serving's SharedBatchScheduler idea: models do not compete with pools of their own).

>>> pool = WorkerPool(num_threads=2)
>>> batcher = DynamicBatcher(lambda items: [sum(i) for i in items], len, pool,
...                          max_batch_size=8, batch_timeout_micros=1000)
>>> batcher.submit([1, 2, 3]).result(timeout=5)
6
>>> batcher.close(); pool.shutdown()
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import QueueFull

T = TypeVar("T")
R = TypeVar("R")


class WorkerPool:
    """The thread pool that runs model sessions; ``slots`` lets a batcher wait for a free
    worker before closing its batch, so batches grow while every worker is busy."""

    def __init__(self, num_threads: int) -> None:
        self.num_threads = max(1, num_threads)
        self.executor = ThreadPoolExecutor(self.num_threads, thread_name_prefix="ort-worker")
        self.slots = threading.Semaphore(self.num_threads)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Task(Generic[T]):
    item: T
    rows: int
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)


class DynamicBatcher(Generic[T, R]):
    """Merges submitted items into batches for ``run_many(items) -> results``.

    ``size_of(item)`` counts an item's rows. With ``enabled=False`` each item runs alone
    (the same back-pressure applies). ``on_batch(rows)`` is called per batch run (metrics).
    """

    def __init__(
        self,
        run_many: Callable[[Sequence[T]], Sequence[R]],
        size_of: Callable[[T], int],
        pool: WorkerPool,
        max_batch_size: int = 32,
        batch_timeout_micros: int = 1000,
        max_enqueued_batches: int = 64,
        enabled: bool = True,
        name: str = "model",
        on_batch: Callable[[int], Any] | None = None,
    ) -> None:
        self.run_many = run_many
        self.size_of = size_of
        self.pool = pool
        self.max_batch_size = max_batch_size
        self.timeout = batch_timeout_micros / 1e6
        self.max_enqueued_batches = max_enqueued_batches
        self.enabled = enabled
        self.name = name
        self.on_batch = on_batch
        self._queue: deque[_Task[T]] = deque()
        self._queued_rows = 0
        self._in_flight = 0
        self._closed = False
        self._cond = threading.Condition()
        self._dispatcher: threading.Thread | None = None
        if enabled:
            self._dispatcher = threading.Thread(
                target=self._dispatch_loop, name=f"batcher-{name}", daemon=True
            )
            self._dispatcher.start()

    @property
    def queue_depth(self) -> int:
        """Rows waiting for a batch (batching on) or items waiting for a worker (off)."""
        return self._queued_rows if self.enabled else self._in_flight

    def submit(self, item: T) -> Future:
        """Queue ``item``; the future resolves to its result. Raises :class:`QueueFull`."""
        task = _Task(item, self.size_of(item))
        with self._cond:
            if self._closed or not self.enabled:
                # A request that resolved this version just before it was swapped out
                # still completes: it runs alone instead of failing.
                limit = self.max_enqueued_batches + self.pool.num_threads
                if not self._closed and self._in_flight >= limit:
                    raise QueueFull(
                        f"{self.name}: {self._in_flight} requests in flight, the limit is "
                        f"{limit} (max_enqueued_batches + batch threads); retry later"
                    )
                self._in_flight += 1
                self.pool.executor.submit(self._run_alone, task)
                return task.future
            capacity = self.max_enqueued_batches * self.max_batch_size
            if self._queued_rows and self._queued_rows + task.rows > capacity:
                raise QueueFull(
                    f"{self.name}: batch queue is full ({self._queued_rows} rows queued, "
                    f"max_enqueued_batches={self.max_enqueued_batches} x "
                    f"max_batch_size={self.max_batch_size}); retry later"
                )
            self._queue.append(task)
            self._queued_rows += task.rows
            self._cond.notify()
        return task.future

    def close(self) -> None:
        """Stop batching after the queued items have run; later submits run alone."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
            # Wait for a worker before closing the batch: meanwhile more requests join it.
            self.pool.slots.acquire()
            with self._cond:
                deadline = self._queue[0].enqueued + self.timeout
                while self._queued_rows < self.max_batch_size and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch: list[_Task[T]] = []
                rows = 0
                while self._queue and (
                    not batch or rows + self._queue[0].rows <= self.max_batch_size
                ):
                    task = self._queue.popleft()
                    self._queued_rows -= task.rows
                    # Requests whose caller already gave up (timeout) are dropped here.
                    if task.future.set_running_or_notify_cancel():
                        batch.append(task)
                        rows += task.rows
            if not batch:
                self.pool.slots.release()
                continue
            try:
                self.pool.executor.submit(self._run_batch, batch, rows)
            except RuntimeError as exc:  # pool shut down
                self.pool.slots.release()
                for task in batch:
                    task.future.set_exception(exc)

    def _run_batch(self, batch: list[_Task[T]], rows: int) -> None:
        try:
            if self.on_batch is not None:
                self.on_batch(rows)
            results = self.run_many([t.item for t in batch])
            for task, result in zip(batch, results, strict=True):
                task.future.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear of it
            for task in batch:
                if not task.future.done():
                    task.future.set_exception(exc)
        finally:
            self.pool.slots.release()

    def _run_alone(self, task: _Task[T]) -> None:
        try:
            if not task.future.set_running_or_notify_cancel():
                return
            if self.on_batch is not None:
                self.on_batch(task.rows)
            try:
                (result,) = self.run_many([task.item])
                task.future.set_result(result)
            except BaseException as exc:  # noqa: BLE001
                task.future.set_exception(exc)
        finally:
            with self._cond:
                self._in_flight -= 1
