"""Real sentences for the batch tests (the exports come from the root `write_export`)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sentences(sst2_dev_sentences: list[str]) -> list[str]:
    """60 real SST-2 dev sentences."""
    return sst2_dev_sentences[:60]
