"""Atomic outputs: complete or absent, and readable like any file the user writes."""

import os
import stat

import pytest

from tfllm.atomic import atomic_dir, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_atomic_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path, umask_022):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert _mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_dir_gets_the_umask_mode_not_mkdtemps_0700(tmp_path, umask_022):
    with atomic_dir(tmp_path / "run") as tmp:
        (tmp / "a.txt").write_text("x")
    assert _mode(tmp_path / "run") == 0o755
    assert (tmp_path / "run" / "a.txt").read_text() == "x"


def test_a_failed_atomic_dir_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "run") as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
