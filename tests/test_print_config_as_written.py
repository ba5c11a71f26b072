"""`avflow train ... --print-config` where the config names a path not on this machine: the recipe is printed as
written (every such path is a MissingPathError, whoever checks it), and what it prints loads back as the same config
(command-line values as the YAML values they read as, not as quoted text)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from avflow.cli import main
from avflow.config import to_dict
from avflow.data import datasets as ds
from avflow.errors import MissingPathError
from avflow.train.config import load_train_config


def _printed(capsys, argv: list[str], error: str) -> dict:
    """What `avflow train ... --print-config` printed as written; its one-line error must hold `error`."""
    assert main(["train", *argv, "--print-config"]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and error in err, err
    assert out.startswith("# as written"), out
    return yaml.safe_load(out)


def test_mmaudio_train_without_its_cache_is_printed_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    printed = _printed(capsys, ["mmaudio_train"], "latent_stats: no such feature cache folder or weights file")
    assert printed["model"]["args"]["latent_stats"] == "caches/vggsound_train"


def test_the_documented_fine_tune_without_its_weights_is_printed_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [
        "configs/mmaudio_finetune.yaml",
        "out_dir=runs/x",
        "model.args.variant=small_16k",
        "model.args.init=weights/mmaudio_small_16k.pth",
        "data.train.args.sources={caches/my_clips: 1.0}",
    ]
    printed = _printed(capsys, argv, "init: checkpoint not found: weights/mmaudio_small_16k.pth")
    assert printed["model"]["args"]["init"] == "weights/mmaudio_small_16k.pth"
    assert printed["data"]["train"]["args"]["sources"] == {"caches/my_clips": 1.0}


def test_a_missing_resume_file_is_printed_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    printed = _printed(capsys, ["toy", "checkpoint.resume=gone.pt"], "resume: no such checkpoint file: 'gone.pt'")
    assert printed["checkpoint"]["resume"] == "gone.pt"


def test_missing_tables_media_folders_and_world_manifests_are_missing_paths(tmp_path):
    table = tmp_path / "captions.csv"
    table.write_text("file,caption\na.wav,rain\n")
    with pytest.raises(MissingPathError, match="caption table not found"):
        ds.read_captions(tmp_path / "none.csv", tmp_path)
    with pytest.raises(MissingPathError, match="media folder not found"):
        ds.read_captions(table, tmp_path / "no_media")
    with pytest.raises(MissingPathError, match="world manifest not found"):
        ds.read_world(tmp_path / "no_world")


def test_the_config_printed_as_written_loads_back_the_same(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the recipe's data/world2s is not here yet
    overrides = [
        "train.steps=5",
        "optim.betas=[0.9, 0.95]",
        "optim.lr=3e-4",
        "model.args.width=64",
        "log.tensorboard=true",
        "out_dir=runs/x",
        "checkpoint.resume=none",
    ]
    _printed(capsys, ["codecs/world_audio", *overrides], "no such folder: 'data/world2s'")
    assert main(["train", "codecs/world_audio", *overrides, "--print-config"]) == 2
    out = capsys.readouterr().out
    assert "'5'" not in out and "'[0.9" not in out
    printed = tmp_path / "printed.yaml"
    printed.write_text(out)
    Path("data/world2s").mkdir(parents=True)  # now the data are here: both resolve
    expected = load_train_config(Path(__file__).parents[1] / "avflow/assets/configs/codecs/world_audio.yaml", overrides)
    assert to_dict(load_train_config(printed)) == to_dict(expected)
    assert expected.train.steps == 5 and tuple(expected.optim.betas) == (0.9, 0.95)
