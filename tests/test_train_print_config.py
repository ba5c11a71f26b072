"""`avflow train RECIPE --print-config` shows the keys to override even where the recipe does not resolve yet."""

from __future__ import annotations

import yaml

from avflow.cli import main


def test_a_recipe_whose_data_are_missing_is_printed_as_written_then_its_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the recipe's caches/ are not here
    assert main(["train", "mmaudio_finetune", "--print-config", "optim.lr=3e-5"]) == 2
    out, err = capsys.readouterr()
    printed = yaml.safe_load(out)
    assert "sources" in printed["data"]["train"]["args"] and float(printed["optim"]["lr"]) == 3e-5
    assert len(err.strip().splitlines()) == 1 and "cache folder not found" in err


def test_a_config_that_resolves_is_printed_resolved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "toy", "--print-config", "train.steps=7"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["steps"] == 7 and "ema" in printed  # defaults filled in
