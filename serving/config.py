"""Server configuration: plain dataclasses loaded from YAML (``configs/serve/*.yaml``).

Names follow TF Serving's flags and ``ModelServerConfig`` fields in snake_case, so a
TF Serving user recognises them (``file_system_poll_wait_seconds``,
``model_version_policy``, ``version_labels``, ``max_batch_size``,
``batch_timeout_micros``, ``max_enqueued_batches``, ``num_batch_threads``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .feedback import FeedbackConfig

VERSION_POLICIES = ("latest", "specific", "all")


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a
    container's CPU limit, which `os.cpu_count()` does not see), at least 1.

    >>> available_cpus() >= 1
    True
    """
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup)
    return max(1, min(count, math.ceil(quota)) if quota else count)


def _cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs' worth of time per period the cgroup allows (v2 `cpu.max`, v1 `cpu.cfs_*`)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 else None
    except (OSError, ValueError, ZeroDivisionError):
        return None
OVER_LENGTH_POLICIES = ("truncate", "reject")


@dataclass
class ModelSpecConfig:
    """Which versions of one model to serve and under which labels.

    >>> m = ModelSpecConfig(name="sst2", version_policy="specific", versions=[1, 2],
    ...                     version_labels={"stable": 1, "canary": 2})
    >>> m.validate()
    """

    name: str
    # latest: the num_versions highest; specific: exactly `versions`; all: every one.
    version_policy: str = "latest"
    num_versions: int = 1
    versions: list[int] = field(default_factory=list)
    version_labels: dict[str, int] = field(default_factory=dict)
    # A format key of model_config.json "artifacts"; None means the server default.
    artifact: str | None = None

    def validate(self) -> None:
        if self.version_policy not in VERSION_POLICIES:
            raise ValueError(
                f"model {self.name!r}: version_policy must be one of {VERSION_POLICIES}, "
                f"got {self.version_policy!r}"
            )
        if self.version_policy == "specific" and not self.versions:
            raise ValueError(f"model {self.name!r}: version_policy 'specific' needs versions")
        if self.num_versions < 1:
            raise ValueError(f"model {self.name!r}: num_versions must be >= 1")


@dataclass
class BatchingConfig:
    """Dynamic batching, as TF Serving's ``--batching_parameters_file``."""

    enabled: bool = True
    max_batch_size: int = 32
    # Batches already form while every worker is busy (the batcher waits for a free
    # worker before closing a batch), so 0 adds no latency to a lone request; TF
    # Serving's "slightly above zero" (~1000) trades that latency for fuller batches.
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 64
    # 0 = one per CPU core (of the worker's share).
    num_batch_threads: int = 0
    # A merged batch's padded tokens may reach this many times its requests' own (requests
    # sorted by length, split where it would be more). 0 = by device: 1.3 on a CPU, where a
    # run costs about its padded tokens; no limit on a GPU, where it costs per run.
    max_padding_ratio: float = 0.0


@dataclass
class RuntimeConfig:
    """onnxruntime session options."""

    # 0 = cores divided among the batch threads, so concurrent runs do not oversubscribe.
    intra_op_threads: int = 0
    # onnxruntime's idle intra-op threads busy-wait for work by default; in a server that
    # CPU is needed by HTTP, tokenization and the next batch (off: lower B=1 latency and
    # higher throughput measured by bench/serve.py on a 2-core CPU).
    intra_op_spinning: bool = False
    # A batch of one row runs on every core when no other run is going on in any worker
    # (tfllm_serving.cores): low latency when idle, each worker's share under load. Costs a
    # second session per version where a worker has fewer threads than the machine's cores.
    lone_request_all_cores: bool = True
    # "auto" = CUDAExecutionProvider when onnxruntime offers it, else CPU.
    providers: list[str] | str = "auto"
    warmup: bool = True


@dataclass
class LimitsConfig:
    """Hard limits applied to every request."""

    max_body_bytes: int = 1 << 20
    max_instances: int = 256
    # 0 = the model's max_len from model_config.json.
    max_sequence_length: int = 0
    # truncate: cut text to the limit; reject: answer 400 when it is longer.
    over_length: str = "truncate"
    request_timeout_seconds: float = 30.0


@dataclass
class ServerConfig:
    """Everything ``tfllm-serve`` needs; CLI flags override the YAML values.

    >>> cfg = ServerConfig.from_dict({"model_repo": "/models", "batching": {"max_batch_size": 8}})
    >>> cfg.batching.max_batch_size, cfg.host
    (8, '127.0.0.1')
    """

    model_repo: str | None = None
    host: str = "127.0.0.1"
    port: int = 8501
    # None or 0 disables the gRPC endpoint.
    grpc_port: int | None = 8500
    # Server processes sharing the port (tfllm_serving.workers); 0 = one per core (one
    # when feedback is on without log_text: ids are then known only to the worker that
    # answered).
    workers: int = 0
    auth_token_file: str | None = None
    file_system_poll_wait_seconds: float = 1.0
    # Default artifact (a key of model_config.json "artifacts") for every model.
    artifact: str = "onnx"
    # Empty = serve every model folder found in the repository with the latest policy.
    models: list[ModelSpecConfig] = field(default_factory=list)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # opt-in prediction log + POST :feedback (tfllm_serving.feedback)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    access_log: bool = True
    log_level: str = "info"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerConfig:
        """Build from a parsed YAML mapping; unknown keys are errors, not silently ignored."""
        data = dict(data or {})
        nested = {
            "batching": BatchingConfig,
            "runtime": RuntimeConfig,
            "limits": LimitsConfig,
            "feedback": FeedbackConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in nested:
                kwargs[key] = _build(nested[key], value or {}, key)
            elif key == "models":
                kwargs[key] = [
                    _build(ModelSpecConfig, m, f"models[{i}]") for i, m in enumerate(value or [])
                ]
            else:
                kwargs[key] = value
        cfg = _build(cls, kwargs, "config")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> ServerConfig:
        """Load a YAML file (``yaml.safe_load``: never constructs arbitrary objects)."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(yaml.safe_load(fh) or {})

    def validate(self) -> None:
        for m in self.models:
            m.validate()
        if self.limits.over_length not in OVER_LENGTH_POLICIES:
            raise ValueError(
                f"limits.over_length must be one of {OVER_LENGTH_POLICIES}, "
                f"got {self.limits.over_length!r}"
            )
        if self.batching.max_batch_size < 1:
            raise ValueError("batching.max_batch_size must be >= 1")
        if self.batching.max_enqueued_batches < 1:
            raise ValueError("batching.max_enqueued_batches must be >= 1")
        if self.batching.max_padding_ratio and self.batching.max_padding_ratio < 1:
            raise ValueError("batching.max_padding_ratio must be >= 1 (or 0 = by device), "
                             f"got {self.batching.max_padding_ratio}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = one per core), got {self.workers}")
        if self.workers > 1 and self.feedback.enabled and not self.feedback.log_text:
            raise ValueError(
                "workers > 1 with feedback needs feedback.log_text: true (a :feedback "
                "naming a prediction id may reach another worker, which finds the text in "
                "that worker's prediction log), or workers: 1")

    def model_spec(self, name: str) -> ModelSpecConfig:
        """The configured spec for ``name``, or the default latest-version spec."""
        for m in self.models:
            if m.name == name:
                return m
        return ModelSpecConfig(name=name)

    def artifact_for(self, name: str) -> str:
        return self.model_spec(name).artifact or self.artifact

    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        if self.feedback.enabled and not self.feedback.log_text:
            return 1
        return available_cpus()

    def worker_cpus(self) -> int:
        """Each worker's share of the cores (what its batch and onnxruntime threads use)."""
        return max(1, available_cpus() // self.worker_count())

    def batch_threads(self) -> int:
        return self.batching.num_batch_threads or self.worker_cpus()

    def intra_op_threads(self) -> int:
        if self.runtime.intra_op_threads:
            return self.runtime.intra_op_threads
        return max(1, self.worker_cpus() // self.batch_threads())

    def read_auth_token(self) -> bytes | None:
        """The bearer token as bytes (surrounding whitespace stripped), or None."""
        if not self.auth_token_file:
            return None
        token = Path(self.auth_token_file).read_bytes().strip()
        if not token:
            raise ValueError(f"auth token file {self.auth_token_file} is empty")
        return token


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    return cls(**values)
