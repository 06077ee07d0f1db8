"""Writing benchmark results: `bench/results/<name>.json` and a table in docs/results.md.

Every table carries the machine it was measured on; a re-run replaces its own section.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
RESULTS_MD = REPO / "docs" / "results.md"


def machine() -> dict:
    """CPU model, core count, memory and the Python/platform, for every results table."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    # Hosts behind one model name differ in these, and bf16 speed hangs on them.
    matrix = [name for flag, name in [("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"),
                                      ("avx512f", "AVX-512"), ("avx2", "AVX2")] if flag in flags]
    memory_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:  # the GPU, where there is one: tables measured on it must say so
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        gpu = []
    return {"cpu": cpu, "cpu_matrix_isa": matrix, "cores": os.cpu_count(), "memory_gb": memory_gb,
            **({"gpu": gpu[0]} if gpu else {}),
            "python": platform.python_version(), "platform": platform.platform(),
            **LAUNCH_STATE}


def tree_state() -> dict:
    """The commit the measuring code came from, and whether tracked files differed from it
    (`dirty`): a row is reproducible from its commit only when `dirty` is false."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "--short", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except OSError:
        return {"commit": "", "dirty": None}


# Taken when a benchmark starts (it imports this module first): the code that ran is the
# code of this moment, whatever is committed while it runs.
LAUNCH_STATE = tree_state()


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, data: dict, table: str, notes: str = "") -> None:
    """Save JSON and replace (or append) the `## title` section of docs/results.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    # Rows measured in this run carry its commit; rows kept from earlier runs keep theirs.
    for row in data.get("results", []):
        if isinstance(row, dict):
            row.setdefault("commit", info["commit"])
            row.setdefault("dirty", info["dirty"])
    payload = {"benchmark": name, "machine": info, **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    section = (
        f"## {title}\n\n"
        f"Machine: {info['cpu']}"
        + (f" ({', '.join(info['cpu_matrix_isa'])})" if info.get("cpu_matrix_isa") else "")
        + f", {info['cores']} cores, {info['memory_gb']} GiB, "
        + (f"GPU {info['gpu']}, " if info.get("gpu") else "") +
        f"Python {info['python']}, commit {info['commit']}"
        + (" with uncommitted changes" if info.get("dirty") else "") + ". "
        f"Raw numbers: `bench/results/{name}.json`.\n\n{table}\n"
        + (f"\n{notes.strip()}\n" if notes else "")
    )
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Measured results\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    earlier = pattern.search(text)
    if earlier:
        # Hand-written "Reading ..." paragraphs of earlier runs (each dated) stay below the table.
        kept = [p.strip() for p in re.split(r"\n\s*\n", earlier.group(0))
                if p.startswith("Reading") and p.strip() not in section]
        if kept:
            section = section.rstrip("\n") + "\n\n" + "\n\n".join(kept) + "\n"
    text = pattern.sub(lambda _: section + "\n", text) if earlier else (
        text.rstrip() + "\n\n" + section)
    RESULTS_MD.write_text(text.rstrip() + "\n")
