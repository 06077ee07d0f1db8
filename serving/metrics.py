"""Prometheus metrics of one server, in a registry of its own (several servers can live
in one process, e.g. in tests, without clashing in the global registry).

Under several workers (`tfllm_serving.workers`), prometheus_client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR` set) keeps every value in per-process files and a scrape sums
them, whichever worker answers it: request counts and histograms add up across workers,
the queue depth is the sum over live workers, model loads count once per worker.

>>> m = ServingMetrics()
>>> m.observe_request("sst2", "1", "predict", 200, 0.004, api="rest")
>>> b"tfllm_serving_requests_total" in m.exposition()
True
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServingMetrics:
    """Request count/latency by model, version, method, status and API; batch sizes;
    queue depth; model loads."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.shared_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self._depths: dict[tuple[str, str], Callable[[], float]] = {}
        self.registry = CollectorRegistry()
        labels = ("model", "version", "method", "status", "api")
        self.requests = Counter(
            "tfllm_serving_requests", "Requests answered.", labels, registry=self.registry
        )
        self.latency = Histogram(
            "tfllm_serving_request_latency_seconds",
            "Time from request received to response ready.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "tfllm_serving_batch_size",
            "Rows per model run (after dynamic batching).",
            ("model", "version"),
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "tfllm_serving_queue_depth",
            "Rows waiting in the batch queue.",
            ("model", "version"),
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.model_loads = Counter(
            "tfllm_serving_model_loads",
            "Version load attempts by outcome (loaded, rejected, unloaded).",
            ("model", "version", "outcome"),
            registry=self.registry,
        )

    def observe_request(
        self, model: str, version: str, method: str, status: int, seconds: float, api: str
    ) -> None:
        labels = (model, version, method, str(status), api)
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)
        if self.shared_dir:
            self._store_depth(model, version)

    def batch_observer(self, model: str, version: str) -> Callable[[int], None]:
        observe = self.batch_size.labels(model, version).observe
        if not self.shared_dir:
            return observe

        def observe_and_store_depth(rows: int) -> None:
            observe(rows)
            self._store_depth(model, version)

        return observe_and_store_depth

    def track_queue(self, model: str, version: str, depth: Callable[[], float]) -> None:
        if self.shared_dir:
            # A scrape reads files, not this process's callbacks: the depth is written
            # at each batch and each answered request instead.
            self._depths[(model, version)] = depth
        else:
            self.queue_depth.labels(model, version).set_function(depth)

    def _store_depth(self, model: str, version: str) -> None:
        depth = self._depths.get((model, version))
        if depth is not None:
            self.queue_depth.labels(model, version).set(depth())

    def untrack_queue(self, model: str, version: str) -> None:
        if self._depths.pop((model, version), None) is not None:
            self.queue_depth.labels(model, version).set(0)
        try:
            self.queue_depth.remove(model, version)
        except KeyError:
            pass

    def exposition(self) -> bytes:
        if not self.shared_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.shared_dir)
        return generate_latest(registry)
