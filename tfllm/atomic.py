"""Outputs that appear complete or not at all: write under a temporary name, then rename.

Example:

>>> import tempfile, pathlib
>>> from tfllm.atomic import atomic_dir
>>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
>>> with atomic_dir(out) as tmp:
...     _ = (tmp / "stats.json").write_text("{}")
>>> sorted(p.name for p in out.iterdir())
['stats.json']
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from tfllm.errors import InputError


def _temporary_name(path: Path) -> Path:
    # Not mkstemp/mkdtemp: they force 0600/0700; creating with O_EXCL keeps the umask's mode.
    return path.parent / f".{path.name}.tmp-{secrets.token_hex(8)}"


@contextlib.contextmanager
def atomic_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that becomes `out` only if the block succeeds."""
    out = Path(out)
    if out.exists() and not overwrite:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            raise InputError(f"output already exists: {out} (choose another --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(out)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file via a temporary name in the same folder, then rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file via a temporary name in the same folder, then rename."""
    path = Path(path)
    tmp = _temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
