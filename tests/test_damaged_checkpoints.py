"""A run folder whose checkpoints are all damaged is an error before anything is built or written (it restarted
from step 0 over the old run); keep-last pruning never deletes the checkpoint just saved (damaged higher-numbered
files pushed it out)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from test_train import _train_in_process, tiny_config

from avflow.errors import WeightsError
from avflow.train import checkpoint as ckpt


def _damage_every_checkpoint(folder: Path) -> None:
    for _, path in ckpt.list_checkpoints(folder):
        path.write_bytes(b"")


def test_every_checkpoint_damaged_is_one_line_and_leaves_the_run_as_it_was(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run")
    cfg["train"]["steps"] = 2
    cfg["log"].update(every=1, val_every=0, sample_every=0)
    cfg["checkpoint"]["every"] = 1
    assert _train_in_process(cfg, tmp_path) == 0
    run = tmp_path / "run"
    _damage_every_checkpoint(run / "checkpoints")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    cfg["train"]["steps"] = 3
    assert _train_in_process(cfg, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert f"every checkpoint in {run / 'checkpoints'} is damaged" in err and "and 1 more" in err
    assert "falling back" not in err  # there is nothing to fall back to
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_load_latest_without_any_usable_checkpoint(tmp_path):
    assert ckpt.load_latest(tmp_path / "missing") is None and ckpt.load_latest(tmp_path) is None
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, {"step": step}, keep_last=3)
    _damage_every_checkpoint(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "falling back" note: there is no previous checkpoint
        with pytest.raises(WeightsError, match=r"every checkpoint in .* is damaged \(.*step_00000002\.pt.*and 1 more"):
            ckpt.load_latest(tmp_path)


def test_pruning_keeps_the_checkpoint_just_saved(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, {"step": step}, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 3]
    for step in (8, 10):  # newer, damaged: a resume fell back past them to step 4
        ckpt.checkpoint_path(tmp_path, step).write_bytes(b"")
    path = ckpt.save_checkpoint(tmp_path, 5, {"step": 5}, keep_last=2)
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [10, 5]
    assert ckpt.load_checkpoint(path)["step"] == 5
