"""A resumed checkpoint is mapped, not read into memory (no process holds a second full copy of model, optimizer and
EMA states while it loads; under torchrun the ranks share the pages), and what the run then does to the loaded
tensors never reaches the file (copy-on-write)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from avflow.train import checkpoint as ckpt
from avflow.weights import sha256_file


def _mapped(path: Path) -> bool:
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads the process's mappings from /proc (Linux)")
def test_a_loaded_checkpoint_maps_its_file_and_keeps_it_unchanged(tmp_path):
    path = ckpt.checkpoint_path(tmp_path, 4)
    torch.save({"model": {"w": torch.arange(4096.0)}, "step": 4}, path)
    digest = sha256_file(path)
    state = ckpt.load_checkpoint(path, verify=False)
    assert _mapped(path)  # read on use, from the page cache: not a private copy of the whole file
    state["model"]["w"].add_(1.0)  # e.g. Adam updating a loaded moment in place
    assert sha256_file(path) == digest
    assert torch.equal(ckpt.load_checkpoint(path, verify=False)["model"]["w"], torch.arange(4096.0))
    del state
