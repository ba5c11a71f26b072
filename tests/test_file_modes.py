"""Files avflow writes get the permissions the user's umask gives any new file."""

from __future__ import annotations

import os

import torch

from avflow.weights import save_safetensors, save_torch


def test_written_weights_have_the_umask_permissions(tmp_path):
    """safetensors' save_file creates its file 0600: every weights file, cache shard and checkpoint export was
    unreadable to the other users of a shared folder, while the json beside it was not."""
    old = os.umask(0o022)
    try:
        a = save_safetensors({"w": torch.zeros(3)}, tmp_path / "a.safetensors")
        b = save_torch({"w": torch.zeros(3)}, tmp_path / "b.pt")
        os.umask(0o077)  # a private umask is kept too
        c = save_safetensors({"w": torch.zeros(3)}, tmp_path / "c.safetensors")
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in (a, b, c)] == [0o644, 0o644, 0o600]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
