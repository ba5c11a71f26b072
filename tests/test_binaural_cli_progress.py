"""`avflow binaural` with a model shows its sampling steps as `avflow generate` does (it printed nothing until the
track was written); the spatialiser samples nothing and shows its own bar (`spatialise:`: the video read window by
window, then the placing)."""

from __future__ import annotations

import torch
from test_binaural import _inputs

from avflow.models.binaural import BinauralConfig, BinauralFlow, save_binaural


def test_model_mode_shows_its_steps(tmp_path, capsys):
    from avflow.cli import main
    from avflow.codecs.world import load_world_codecs

    codecs = load_world_codecs()
    torch.manual_seed(0)
    model = BinauralFlow(BinauralConfig(latent_dim=codecs.audio.latent_channels, dim=32, depth=1, heads=2, bins=8))
    mine = tmp_path / "mine.safetensors"
    save_binaural(model, mine, codecs_checksum=codecs.checksum)
    src, _ = _inputs(tmp_path)
    assert main(["binaural", str(src), "-o", str(tmp_path / "m.mp4"), "--model", str(mine), "--steps", "3"]) == 0
    err = capsys.readouterr().err
    assert "binaural: 100%" in err and "3/3" in err, err
    assert main(["binaural", str(src), "-o", str(tmp_path / "s.mp4"), "--mode", "spatialise"]) == 0
    err = capsys.readouterr().err
    assert "binaural:" not in err and "spatialise: 100%" in err, err
