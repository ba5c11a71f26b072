"""What a resumed run does with settings changed since its checkpoint: a changed optimizer or schedule takes effect
at the resumed step; another `init.freeze` or `ema.sigma_rels` is refused in one line; a first step that fails on a
misnamed stream is one line; resume notes are one line."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from test_train import _train_in_process, tiny_config

from avflow.train import checkpoint as ckpt
from avflow.train.config import ScheduleConfig
from avflow.train.optim import lr_factor


def _cfg(out_dir: Path, steps: int) -> dict:
    cfg = tiny_config(out_dir)
    cfg["train"]["steps"] = steps
    cfg["log"].update(every=1, val_every=0, sample_every=0)
    return cfg


def _lrs(out_dir: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {rec["step"]: rec["lr"] for rec in lines if "lr" in rec}


def test_a_changed_optimizer_and_schedule_take_effect_on_resume(tmp_path, capsys):
    cfg = _cfg(tmp_path / "run", 4)
    assert _train_in_process(cfg, tmp_path) == 0
    old = ScheduleConfig(**cfg["schedule"])
    for step, lr in _lrs(tmp_path / "run").items():
        assert abs(lr - 1e-2 * lr_factor(step, old, 4)) < 1e-12  # how a logged lr relates to the schedule
    capsys.readouterr()

    cfg["train"]["steps"] = 8
    cfg["optim"].update(lr=5e-3, betas=[0.8, 0.95], weight_decay=0.1, eps=1e-6)
    cfg["schedule"].update(warmup_steps=6, min_lr_ratio=0.2)
    assert _train_in_process(cfg, tmp_path) == 0
    assert "changed since: optim.betas" in capsys.readouterr().err
    new = ScheduleConfig(**cfg["schedule"])
    lrs = _lrs(tmp_path / "run")
    assert sorted(lrs) == list(range(1, 9))
    for step in range(5, 9):
        assert abs(lrs[step] - 5e-3 * lr_factor(step, new, 8)) < 1e-12, (step, lrs[step])

    state = torch.load(ckpt.checkpoint_path(tmp_path / "run" / "checkpoints", 8), weights_only=True)
    groups = state["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]  # the no-decay group keeps none
    for g in groups:
        assert tuple(g["betas"]) == (0.8, 0.95) and g["eps"] == 1e-6 and g["initial_lr"] == 5e-3
        assert abs(g["lr"] - 5e-3 * lr_factor(8, new, 8)) < 1e-12
    assert state["scheduler"]["base_lrs"] == [5e-3, 5e-3]


def test_another_freeze_or_ema_profile_is_refused_on_resume(tmp_path, capsys):
    start = _cfg(tmp_path / "start", 2)
    assert _train_in_process(start, tmp_path / "a") == 0
    cfg = _cfg(tmp_path / "run", 2)
    cfg["init"] = {"weights": str(tmp_path / "start" / "model.safetensors"), "freeze": ["inputs."]}
    assert _train_in_process(cfg, tmp_path / "b") == 0
    capsys.readouterr()

    cfg["train"]["steps"] = 4
    cfg["init"]["freeze"] = ["time."]
    assert _train_in_process(cfg, tmp_path / "b") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "init.freeze changed since step_00000002.pt (['inputs.'] -> ['time.'])" in err
    assert "init.weights=" in err and "Traceback" not in err

    cfg["init"]["freeze"] = ["inputs."]
    cfg["ema"]["sigma_rels"] = [0.1]
    assert _train_in_process(cfg, tmp_path / "b") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ema.sigma_rels changed since step_00000002.pt ([0.05, 0.1] -> [0.1])" in err
    assert max(s for s, _ in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")) == 2  # nothing trained

    cfg["ema"]["sigma_rels"] = [0.05, 0.1]
    assert _train_in_process(cfg, tmp_path / "b") == 0  # unchanged: goes on


def test_a_misnamed_stream_is_a_one_line_first_step_error(tmp_path, capsys):
    cfg = _cfg(tmp_path / "run", 2)
    cfg["data"]["train"]["args"]["streams"] = {"audi": [4, 3], "video": [2, 5]}
    assert _train_in_process(cfg, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the first training step failed" in err and "audi" in err, err


def test_a_resume_without_ema_state_is_a_one_line_note(tmp_path, capsys):
    cfg = _cfg(tmp_path / "run", 2)
    cfg["ema"]["enabled"] = False
    assert _train_in_process(cfg, tmp_path) == 0
    capsys.readouterr()
    cfg["ema"]["enabled"], cfg["train"]["steps"] = True, 4
    assert _train_in_process(cfg, tmp_path) == 0
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if "no EMA state" in line)
    assert line.startswith("avflow train: note: ") and "UserWarning" not in err and "warnings.warn" not in err
