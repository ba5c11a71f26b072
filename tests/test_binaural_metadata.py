"""A binaural export's recorded settings (draws, sampling) are read through `avflow.weights.read_metadata`: a
damaged file is a one-line WeightsError naming it, not safetensors' own exception."""

from __future__ import annotations

import pytest

from avflow.errors import WeightsError
from avflow.models.binaural import binaural_draws, binaural_sampling


@pytest.mark.parametrize("read", [binaural_draws, binaural_sampling])
def test_a_damaged_export_is_a_weights_error(read, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError, match="model.safetensors"):
        read(path)
