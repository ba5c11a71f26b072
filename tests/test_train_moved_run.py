"""A run started from `init.weights` resumes without that file (its checkpoint holds every weight: a run folder moved
to another machine), and gives the same weights as if the file were still there; a new run from a missing file is a
one-line error before the model is built."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_train import final_state, in_process_run, tiny_config


def _run(cfg: dict, **train):
    from avflow.config import from_dict
    from avflow.train.config import TrainConfig, validate
    from avflow.train.trainer import train as run

    cfg = {**cfg, "train": {**cfg["train"], **train}}
    return run(validate(from_dict(TrainConfig, cfg)))


def test_resume_without_the_init_weights_file(tmp_path):
    from avflow.errors import ConfigError

    in_process_run(tmp_path, "first")
    start = tmp_path / "start.safetensors"
    shutil.copy(tmp_path / "first" / "model.safetensors", start)
    runs = {}
    for name in ("kept", "moved"):
        cfg = tiny_config(tmp_path / name)
        cfg["train"].update(threads=None)
        cfg["log"].update(val_every=0, sample_every=0)
        cfg["init"] = {"weights": str(start), "freeze": ["time."]}
        assert _run(cfg, steps=4).step == 4
        runs[name] = cfg
    start.unlink()  # the run folder "moved": the file it started from is not there
    assert _run(runs["moved"], steps=6).step == 6
    shutil.copy(tmp_path / "first" / "model.safetensors", start)
    assert _run(runs["kept"], steps=6).step == 6
    kept, moved = final_state(tmp_path / "kept")["model"], final_state(tmp_path / "moved")["model"]
    assert all(torch.equal(kept[k], moved[k]) for k in kept)

    start.unlink()
    fresh = tiny_config(tmp_path / "fresh")
    fresh["init"] = {"weights": str(start)}
    with pytest.raises(ConfigError, match=r"^init.weights: no such file: '.*start.safetensors'$"):
        _run(fresh, threads=None)
    assert not (tmp_path / "fresh").exists()  # refused before anything was written
