"""Which model versions are loaded, and hot reload: poll the repository, load new versions
in the background, validate, swap atomically, unload per policy.

Readers never lock: the map of loaded versions is replaced whole (one reference
assignment), so a request sees either the old or the new set, never a half-built one.

>>> import tempfile
>>> manager = ModelManager(ServerConfig(model_repo=tempfile.mkdtemp()))
>>> manager.reconcile()          # one scan; `start()` keeps polling in a thread
>>> manager.resolve("sst2")      # an empty repository serves nothing yet
Traceback (most recent call last):
...
tfllm_serving.errors.NotFound: Servable not found for request: Latest(sst2)

With a version folder written by `tfllm export` in the repository, `resolve` returns its
`Servable`, and `servable.submit(servable.runtime.encode_texts(["fine ."])).result()` the
outputs (tests/serving/test_hot_reload.py runs that path).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from .batching import DynamicBatcher, WorkerPool
from .config import ServerConfig, available_cpus
from .cores import LOCK_ENV, CoreLease, lease_supported
from .errors import NotFound, Unavailable
from .metrics import ServingMetrics
from .repository import ModelRepository, VersionFingerprint, select_versions
from .runtime import BatchOutput, EncodedBatch, ModelRuntime

log = logging.getLogger(__name__)

# TF Serving's ModelVersionStatus.State names.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class Servable:
    """A loaded version and the batcher in front of it."""

    runtime: ModelRuntime
    batcher: DynamicBatcher[EncodedBatch, BatchOutput]

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def version(self) -> int:
        return self.runtime.version

    def submit(self, batch: EncodedBatch) -> Future:
        return self.batcher.submit(batch)


@dataclass
class VersionStatus:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""

    def to_json(self) -> dict:
        return {
            "version": str(self.version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


class ModelManager:
    """Owns the worker pool, the loaded servables and their status."""

    def __init__(self, config: ServerConfig, metrics: ServingMetrics | None = None) -> None:
        if not config.model_repo:
            raise ValueError("model_repo is not set")
        self.config = config
        self.metrics = metrics or ServingMetrics()
        self.repo = ModelRepository(config.model_repo)
        self.pool = WorkerPool(config.batch_threads())
        self.lease, self._own_lock = self._core_lease()
        self._servables: dict[str, dict[int, Servable]] = {}
        self._status: dict[str, dict[int, VersionStatus]] = {}
        self._rejected: dict[tuple[str, int], VersionFingerprint] = {}
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self.reconciled_once = False

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Load in the background (the server answers /healthz meanwhile) and keep polling."""
        self._poller = threading.Thread(target=self._poll_loop, name="repo-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
        for versions in self._servables.values():
            for servable in versions.values():
                servable.batcher.close()
        self.pool.shutdown()
        if self.lease is not None:
            self.lease.close()
        if self._own_lock:
            Path(self._own_lock).unlink(missing_ok=True)

    def _core_lease(self) -> tuple[CoreLease | None, str | None]:
        """The lock lone requests take to run on every core (tfllm_serving.cores): the
        server's, shared by its workers, or this process's own."""
        cfg = self.config
        if (not cfg.runtime.lone_request_all_cores or not lease_supported()
                or cfg.intra_op_threads() >= available_cpus()):
            return None, None
        if os.environ.get(LOCK_ENV):
            return CoreLease(os.environ[LOCK_ENV]), None
        fd, path = tempfile.mkstemp(prefix="tfllm-serve-cores-", suffix=".lock")
        os.close(fd)
        return CoreLease(path), path

    def wait_scanned(self) -> None:
        """Block until the first repository scan is done (each version loaded or rejected)."""
        while not self.reconciled_once and not self._stop.is_set():
            time.sleep(0.05)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - a bad scan must not end polling for good
                log.exception("repository scan failed", extra={"event": "scan_failed"})
            self.reconciled_once = True
            self._stop.wait(self.config.file_system_poll_wait_seconds)

    def model_names(self) -> list[str]:
        if self.config.models:
            return [m.name for m in self.config.models]
        return self.repo.model_names()

    # ---- reconcile: the whole hot-reload policy --------------------------------------

    def reconcile(self) -> None:
        """One pass: load wanted versions not loaded yet, then unload unwanted ones."""
        names = self.model_names()
        for name in names:
            self._reconcile_model(name)
        for name in set(self._servables) - set(names):
            self._unload(name, set(self._servables[name]))

    def _wanted(self, name: str) -> list[int]:
        candidates = []
        for version in self.repo.ready_versions(name):
            rejected = self._rejected.get((name, version))
            if rejected is not None:
                if rejected == self._fingerprint(name, version):
                    continue
                del self._rejected[(name, version)]  # its files changed: try again
            candidates.append(version)
        return select_versions(candidates, self.config.model_spec(name))

    def _fingerprint(self, name: str, version: int) -> VersionFingerprint | None:
        try:
            return self.repo.fingerprint(name, version)
        except OSError:
            return None

    def _reconcile_model(self, name: str) -> None:
        attempted: set[int] = set()
        while not self._stop.is_set():
            # Recomputed after each round: a version that failed is no longer wanted, so
            # the policy falls back to the next one (e.g. v1 when a new v2 is corrupt).
            loaded = set(self._servables.get(name, {}))
            missing = set(self._wanted(name)) - loaded - attempted
            if not missing:
                break
            for version in sorted(missing, reverse=True):
                attempted.add(version)
                self._load(name, version)
        unwanted = set(self._servables.get(name, {})) - set(self._wanted(name))
        if unwanted:
            self._unload(name, unwanted)

    def _set_status(self, name: str, status: VersionStatus) -> None:
        with self._write_lock:
            versions = dict(self._status.get(name, {}))
            versions[status.version] = status
            self._status = {**self._status, name: versions}

    def _load(self, name: str, version: int) -> None:
        self._set_status(name, VersionStatus(version, LOADING))
        fingerprint = self._fingerprint(name, version)
        started = time.monotonic()
        try:
            runtime = self._open(name, version)
        except Exception as exc:  # noqa: BLE001 - any failure rejects just this version
            if fingerprint is not None:
                self._rejected[(name, version)] = fingerprint
            message = f"{type(exc).__name__}: {exc}"
            self._set_status(name, VersionStatus(version, END, "UNKNOWN", message))
            self.metrics.model_loads.labels(name, str(version), "rejected").inc()
            log.error(
                "version rejected",
                extra={"event": "version_rejected", "model": name, "version": version,
                       "error": message},
            )
            return
        servable = Servable(runtime, self._make_batcher(runtime))
        with self._write_lock:
            versions = {**self._servables.get(name, {}), version: servable}
            self._servables = {**self._servables, name: versions}
        self._set_status(name, VersionStatus(version, AVAILABLE))
        self.metrics.model_loads.labels(name, str(version), "loaded").inc()
        log.info(
            "version loaded",
            extra={"event": "version_loaded", "model": name, "version": version,
                   "providers": runtime.providers,
                   "seconds": round(time.monotonic() - started, 3)},
        )

    def _open(self, name: str, version: int) -> ModelRuntime:
        cfg = self.config
        runtime = ModelRuntime.load(
            self.repo.version_dir(name, version),
            artifact=cfg.artifact_for(name),
            providers=cfg.runtime.providers,
            intra_op_threads=cfg.intra_op_threads(),
            intra_op_spinning=cfg.runtime.intra_op_spinning,
            max_sequence_length=cfg.limits.max_sequence_length,
            over_length=cfg.limits.over_length,
            max_padding_ratio=cfg.batching.max_padding_ratio,
            lone_threads=available_cpus(),
            lease=self.lease,
        )
        runtime.validate_and_warm_up(cfg.batching.max_batch_size, warmup=cfg.runtime.warmup)
        return runtime

    def _make_batcher(self, runtime: ModelRuntime) -> DynamicBatcher:
        b = self.config.batching
        model, version = runtime.name, str(runtime.version)
        batcher: DynamicBatcher = DynamicBatcher(
            runtime.run_many,
            lambda item: item.size,
            self.pool,
            max_batch_size=b.max_batch_size,
            batch_timeout_micros=b.batch_timeout_micros,
            max_enqueued_batches=b.max_enqueued_batches,
            enabled=b.enabled,
            name=f"model {model} version {version}",
            on_batch=self.metrics.batch_observer(model, version),
        )
        self.metrics.track_queue(model, version, lambda: batcher.queue_depth)
        return batcher

    def _unload(self, name: str, versions: set[int]) -> None:
        with self._write_lock:
            current = dict(self._servables.get(name, {}))
            gone = [current.pop(v) for v in versions if v in current]
            if current:
                self._servables = {**self._servables, name: current}
            else:
                self._servables = {k: v for k, v in self._servables.items() if k != name}
        for servable in gone:
            self._set_status(name, VersionStatus(servable.version, UNLOADING))
            # In-flight requests hold their own reference and finish; late ones run alone.
            servable.batcher.close()
            self.metrics.untrack_queue(name, str(servable.version))
            self.metrics.model_loads.labels(name, str(servable.version), "unloaded").inc()
            self._set_status(name, VersionStatus(servable.version, END))
            log.info("version unloaded",
                     extra={"event": "version_unloaded", "model": name,
                            "version": servable.version})

    # ---- lookups for the front ends --------------------------------------------------

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request addresses, as TF Serving resolves ModelSpec."""
        loaded = self._servables.get(name, {})
        status = self._status.get(name, {})
        if label is not None:
            labels = self.config.model_spec(name).version_labels
            if label not in labels:
                raise NotFound(f"Servable not found for request: Label({name}, {label}): "
                               f"unknown version label")
            version = labels[label]
        if version is not None:
            if version in loaded:
                return loaded[version]
            if status.get(version) and status[version].state in (START, LOADING):
                raise Unavailable(f"model {name} version {version} is loading; retry later")
            raise NotFound(f"Servable not found for request: Specific({name}, {version})")
        if loaded:
            return loaded[max(loaded)]
        if any(s.state in (START, LOADING) for s in status.values()) or (
            not self.reconciled_once and name in self.model_names()
        ):
            raise Unavailable(f"model {name} is loading; retry later")
        raise NotFound(f"Servable not found for request: Latest({name})")

    def model_status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        status = self._status.get(name)
        if not status:
            raise NotFound(f"Could not find any versions of model {name}")
        if label is not None:
            labels = self.config.model_spec(name).version_labels
            if label not in labels:
                raise NotFound(f"Unknown version label {label!r} for model {name}")
            version = labels[label]
        if version is not None:
            if version not in status:
                raise NotFound(f"Could not find version {version} of model {name}")
            return [status[version]]
        return [status[v] for v in sorted(status, reverse=True)]

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """(every model has an AVAILABLE, warmed-up version; per-model detail)."""
        if not self.reconciled_once:
            return False, {"": "repository not scanned yet"}
        names = self.model_names()
        if not names:
            return False, {"": f"no models in {self.repo.root}"}
        detail = {}
        for name in names:
            loaded = self._servables.get(name)
            if loaded:
                detail[name] = f"AVAILABLE (versions {sorted(loaded)})"
            else:
                errors = [s.error_message for s in self._status.get(name, {}).values()
                          if s.error_message]
                detail[name] = "no available version" + (f": {errors[-1]}" if errors else "")
        return all(v.startswith(AVAILABLE) for v in detail.values()), detail

    def loaded(self) -> dict[str, dict[int, Servable]]:
        return self._servables
