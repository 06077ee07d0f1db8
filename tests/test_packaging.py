"""setup.cfg lists every package folder, under its installed name."""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALLED_NAME = {"tfllm": "tfllm", "export": "tfllm_export", "serving": "tfllm_serving"}


def test_every_package_folder_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = set()
    for top, name in INSTALLED_NAME.items():
        for init in (REPO / top).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / top).parts
            found.add(".".join((name, *parts)))
    assert found == listed
    for folder in (REPO / "tfllm").rglob("*.py"):
        assert (folder.parent / "__init__.py").is_file(), f"{folder.parent} lacks __init__.py"
