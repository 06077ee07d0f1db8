"""Model repository scanning, version policy and the YAML config."""

from __future__ import annotations

from pathlib import Path

import pytest
from tfllm_serving.config import ModelSpecConfig, ServerConfig
from tfllm_serving.repository import ModelRepository, select_versions

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_only_numeric_version_folders_with_model_config_count_as_ready(tmp_path: Path) -> None:
    for name, complete in (("1", True), ("0003", True), ("2", False), ("tmp-4", True),
                           (".5", True)):
        d = tmp_path / "m" / name
        d.mkdir(parents=True)
        if complete:
            (d / "model_config.json").write_text("{}")
    repo = ModelRepository(tmp_path)
    assert repo.ready_versions("m") == [1, 3]
    assert repo.version_dir("m", 3).name == "0003"
    assert repo.model_names() == ["m"]
    assert repo.ready_versions("absent") == []


def test_version_policies_pick_latest_specific_or_all() -> None:
    available = [1, 2, 5]
    assert select_versions(available, ModelSpecConfig("m")) == [5]
    assert select_versions(available, ModelSpecConfig("m", num_versions=2)) == [2, 5]
    specific = ModelSpecConfig("m", version_policy="specific", versions=[1, 4])
    assert select_versions(available, specific) == [1]
    assert select_versions(available, ModelSpecConfig("m", version_policy="all")) == [1, 2, 5]


def test_default_yaml_equals_the_dataclass_defaults() -> None:
    cfg = ServerConfig.from_yaml(REPO_ROOT / "configs" / "serve" / "default.yaml")
    assert cfg == ServerConfig()
    assert cfg.host == "127.0.0.1"


def test_config_rejects_unknown_keys_and_bad_policies() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        ServerConfig.from_dict({"batching": {"max_batchsize": 3}})
    with pytest.raises(ValueError, match="version_policy"):
        ServerConfig.from_dict({"models": [{"name": "m", "version_policy": "newest"}]})
    with pytest.raises(ValueError, match="over_length"):
        ServerConfig.from_dict({"limits": {"over_length": "drop"}})
    cfg = ServerConfig.from_dict(
        {"models": [{"name": "m", "version_labels": {"stable": 1}, "artifact": "onnx-int8"}]}
    )
    assert cfg.model_spec("m").version_labels == {"stable": 1}
    assert cfg.artifact_for("m") == "onnx-int8"
    assert cfg.artifact_for("other") == "onnx"


def test_thread_counts_follow_a_container_cpu_limit_not_the_host_core_count(tmp_path: Path):
    from tfllm_serving.config import available_cpus

    host = available_cpus(tmp_path / "none")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")  # a 1.5-CPU limit
    assert available_cpus(v2) == min(host, 2)
    (v2 / "cpu.max").write_text("max 100000\n")
    assert available_cpus(v2) == host
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(v1.parent) == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert available_cpus(v1.parent) == host
