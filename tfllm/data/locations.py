"""Where the shared datasets live: `$TFLLM_DATA`, else `../shared/data` beside the repo.

Example:

>>> from tfllm.data.locations import data_root
>>> (data_root() / "sst2" / "dev.tsv").is_file()
True
"""

from __future__ import annotations

import os
from pathlib import Path

from tfllm.errors import InputError

_REPO = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """The folder holding sst2/, wikitext2/, banking77/ ... (never copied into the repo)."""
    if os.environ.get("TFLLM_DATA"):
        root = Path(os.environ["TFLLM_DATA"])
        if not root.is_dir():
            raise InputError(f"TFLLM_DATA={root} is not a folder")
        return root
    for root in (Path.cwd().parent / "shared" / "data", _REPO.parent / "shared" / "data"):
        if root.is_dir():
            return root
    raise InputError("datasets not found: set TFLLM_DATA or put shared/data beside the repo")
