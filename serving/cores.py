"""Every core for a lone request: a run of one row takes all the cores when nothing else is
running in any worker of the server.

With `workers: N` (default: one per core) each worker's onnxruntime session gets its share
of the cores (cores / workers / batch threads). That suits a loaded server, where every core
has runs to do, but a request that arrives alone then runs on one core while the others
idle (bench/serve.py's 4-layer model at B=1 on 2 cores: 4.4 ms on one, 2.9 on both). So a
version also opens a session on every core, and a batch of one row runs there when a lock
shared by all the workers can be taken exclusively; every other run holds it shared, so the
wide run never competes with them for cores. A lone request that finds the lock taken runs
on its own share, as before, like any run (waiting only while another lone run has every
core): the exclusive lock is tried, never waited for. flock does not queue its waiters, but
a shared waiter wakes as soon as a lone run ends, before the next lone request can arrive.

flock on one file, one descriptor per thread and lease: the workers are processes, flock
locks belong to an open file (so threads of one worker exclude each other too; one thread
never nests the two, which would convert its lock), the kernel drops them when a process
dies, and neither the standard library nor the server's dependencies offer a readers-writer
lock across processes.

>>> import os, tempfile
>>> folder = tempfile.TemporaryDirectory()
>>> lease = CoreLease(os.path.join(folder.name, "cores.lock"))
>>> other_worker = CoreLease(lease.path)
>>> with lease.exclusive_or_not() as alone:
...     alone
True
>>> with other_worker.shared():
...     with lease.exclusive_or_not() as alone:
...         alone
False
>>> lease.close(); other_worker.close(); folder.cleanup()
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # Windows: no flock, so lone requests keep their worker's share
    fcntl = None  # type: ignore[assignment]

LOCK_ENV = "TFLLM_SERVE_CORES_LOCK"  # set by tfllm_serving.workers for every worker


def lease_supported() -> bool:
    return fcntl is not None


class CoreLease:
    """A readers-writer lock on `path` across threads and processes: ordinary runs share it,
    a lone run takes it alone or not at all."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._local = threading.local()
        self._opened: list[int] = []
        self._opened_lock = threading.Lock()

    def _fd(self) -> int:
        fd = getattr(self._local, "fd", None)
        if fd is None:
            fd = self._local.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            with self._opened_lock:
                self._opened.append(fd)
        return fd

    def close(self) -> None:
        """Close every thread's descriptor (after the threads that run models have ended)."""
        with self._opened_lock:
            for fd in self._opened:
                os.close(fd)
            self._opened.clear()
        self._local = threading.local()

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Held by every ordinary run; waits while a lone run has every core."""
        fd = self._fd()
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def exclusive_or_not(self) -> Iterator[bool]:
        """True (held until the block ends) when no other run holds the lock; never waits."""
        fd = self._fd()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
