"""A safetensors file is known by its header whatever the low byte of its header length: one whose length ends in
0x80 (one file in 256) was taken for a torch pickle and refused ("Unsupported operand")."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from avflow.weights import read_state_dict, sniff_format


def test_a_header_length_ending_in_0x80_is_still_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    for pad in range(300):  # metadata of growing length until the header's length ends in 0x80
        save_file({"x": torch.arange(3.0)}, str(path), metadata={"pad": "a" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80  # the low byte of the header length, as a pickle's first byte
    assert sniff_format(path) == "safetensors"
    assert torch.equal(read_state_dict(path)["x"], torch.arange(3.0))


def test_a_pickle_is_still_torch(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"x": torch.zeros(2)}, str(path), _use_new_zipfile_serialization=False)
    assert path.read_bytes()[0] == 0x80 and sniff_format(path) == "torch"
