"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import fixtures_root

# One intra-op thread per test process: `make test` runs two processes on two cores, and oversubscribed
# torch threads slow small ops down by orders of magnitude.
torch.set_num_threads(1)


@pytest.fixture
def fixtures() -> Path:
    return fixtures_root()


@pytest.fixture(autouse=True)
def _own_avflow_home(tmp_path_factory, monkeypatch):
    """$AVFLOW_HOME in a temporary folder: no test reads or writes the user's cache (weights, Winograd choices)."""
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path_factory.mktemp("avflow_home")))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
    torch.set_num_threads(1)  # a test that trains with a config's `train.threads` leaves it set for the next
