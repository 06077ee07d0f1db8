"""The model repository on disk (TF Serving layout ``REPO/NAME/<integer version>/``) and
the version policy that picks which versions to serve.

Pure file-system reading: nothing here loads a model.

>>> import tempfile, pathlib
>>> repo = pathlib.Path(tempfile.mkdtemp())
>>> for v in ("1", "2", "007", "tmp-3"):
...     (repo / "sst2" / v).mkdir(parents=True)
...     _ = (repo / "sst2" / v / "model_config.json").write_text("{}")
>>> ModelRepository(repo).ready_versions("sst2")
[1, 2, 7]
>>> select_versions([1, 2, 7], ModelSpecConfig("sst2"))
[7]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import ModelSpecConfig

# Written last by the export stage: a version folder without it is still being copied.
COMPLETION_MARKER = "model_config.json"


@dataclass(frozen=True)
class VersionFingerprint:
    """What a version folder looked like when it was last tried, so a rejected version
    is retried only after its files change."""

    entries: tuple[tuple[str, int, int], ...]


class ModelRepository:
    """Scans ``root`` for model folders and their complete, numeric version folders."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def version_dir(self, name: str, version: int) -> Path:
        # TF Serving accepts zero-padded names ("00000123"); find the folder that parses.
        model_dir = self.root / name
        plain = model_dir / str(version)
        if plain.is_dir():
            return plain
        for p in model_dir.iterdir():
            if p.name.isdigit() and int(p.name) == version:
                return p
        return plain

    def ready_versions(self, name: str) -> list[int]:
        """Numeric version folders holding the completion marker, ascending."""
        model_dir = self.root / name
        if not model_dir.is_dir():
            return []
        versions = []
        for p in model_dir.iterdir():
            if p.is_dir() and p.name.isdigit() and (p / COMPLETION_MARKER).is_file():
                versions.append(int(p.name))
        return sorted(set(versions))

    def fingerprint(self, name: str, version: int) -> VersionFingerprint:
        vdir = self.version_dir(name, version)
        entries = []
        for p in sorted(vdir.iterdir()):
            if p.is_file():
                st = p.stat()
                entries.append((p.name, st.st_size, st.st_mtime_ns))
        return VersionFingerprint(tuple(entries))


def select_versions(available: list[int], spec: ModelSpecConfig) -> list[int]:
    """Versions to serve out of ``available`` under the model's policy, ascending.

    >>> select_versions([1, 2, 3], ModelSpecConfig("m", num_versions=2))
    [2, 3]
    >>> select_versions([1, 2, 3], ModelSpecConfig("m", version_policy="specific", versions=[1, 9]))
    [1]
    """
    if spec.version_policy == "all":
        return sorted(available)
    if spec.version_policy == "specific":
        return sorted(set(available) & set(spec.versions))
    return sorted(available)[-spec.num_versions :]
