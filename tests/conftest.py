"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread per test process: `make test` runs two processes on two cores, and oversubscribed
# torch threads slow small ops down by orders of magnitude.
torch.set_num_threads(1)


def fixtures_root() -> Path:
    """The reference fixtures folder: $AVFLOW_FIXTURES or ../shared/fixtures. Missing is a failure."""
    root = Path(os.environ.get("AVFLOW_FIXTURES", REPO.parent / "shared" / "fixtures"))
    if not root.is_dir():
        pytest.fail(f"reference fixtures not found at {root} (set AVFLOW_FIXTURES)", pytrace=False)
    return root


@pytest.fixture
def fixtures() -> Path:
    return fixtures_root()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
