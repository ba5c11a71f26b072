"""A run whose loss stops being finite ends in one line and saves no diverged network over a good checkpoint."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_missing_extras import toy_config

from avflow.cli import main
from avflow.errors import TrainingError
from avflow.train import checkpoint as ckpt
from avflow.train.trainer import Trainer

NAN_FROM_STEP = 4  # the step whose loss is the first non-finite one


def nan_after(monkeypatch, first: int) -> None:
    """Trainer.train_step as it is, but from step `first` on its loss and weights turn NaN (a diverged run)."""
    original = Trainer.train_step

    def step(self, batches):
        loss = original(self, batches)
        if self.step + 1 < first:
            return loss
        with torch.no_grad():
            for p in self.model.parameters():
                p.fill_(float("nan"))
        return loss * float("nan")

    monkeypatch.setattr(Trainer, "train_step", step)


def run_config(tmp_path, **train):
    cfg = toy_config(tmp_path / "run", tensorboard=False)
    cfg["train"].update({"steps": 10, **train})
    cfg["log"]["every"] = 5  # the divergence falls between two logged losses, at a checkpoint step
    cfg["checkpoint"] = {"every": 2, "keep_last": 10}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_diverged_run_stops_in_one_line_and_keeps_its_good_checkpoints(monkeypatch, tmp_path, capsys):
    nan_after(monkeypatch, NAN_FROM_STEP)
    assert main(["train", str(run_config(tmp_path))]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "training loss is nan over steps 1-4" in err[0] and "checkpoint (step 2) is kept" in err[0], err[0]
    saved = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [step for step, _ in saved] == [2]  # step 4's NaN network was not written
    state = ckpt.load_checkpoint(saved[0][1])
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "run" / "model.safetensors").exists()  # no export of a diverged network


def test_a_logged_nan_loss_stops_the_run_before_its_checkpoint(monkeypatch, tmp_path):
    from avflow.train import distributed as dist
    from avflow.train.config import load_train_config

    nan_after(monkeypatch, 5)  # step 5 is logged (log.every 5) before step 6's checkpoint
    trainer = Trainer(load_train_config(run_config(tmp_path)), dist.setup("cpu"))
    with pytest.raises(TrainingError, match=r"training loss is nan over steps 1-5.*step 4\) is kept"):
        trainer.fit()
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == [4, 2]


def test_finite_runs_are_untouched(tmp_path):
    assert main(["train", str(run_config(tmp_path, steps=4))]) == 0
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())
