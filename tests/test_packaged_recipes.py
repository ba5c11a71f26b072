"""The training recipes (configs/) and experiments (experiments/) ship inside the package (avflow/assets), so an
installed avflow, run from any folder, finds them by name; the repository's root folders link there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import avflow
from avflow.cli import main

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(avflow.__file__).resolve().parent


def test_a_shipped_recipe_trains_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the names come from the package
    for name in ("toy", "toy.yaml", "configs/toy.yaml"):  # the last: the repository's path, as the docs write it
        assert main(["train", name, "--print-config"]) == 0, name
        assert "out_dir: runs/toy" in capsys.readouterr().out
    from avflow.commands.train import resolve_config, shipped_recipes

    names = shipped_recipes()
    assert {"toy", "mmaudio_finetune", "default_joint_v2_grow", "codecs/world_audio", "codecs/world_video"} <= {*names}
    for name in names:
        path = resolve_config(name)
        assert path.is_file() and path.resolve().is_relative_to(PACKAGE / "assets" / "configs"), name
    assert resolve_config("codecs/world_audio.yaml") == resolve_config("configs/codecs/world_audio.yaml")


def test_an_existing_file_wins_over_a_shipped_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy").write_text("nosuchkey: 1\n")
    assert main(["train", "toy", "--print-config"]) == 2  # ./toy was read, not the shipped toy
    err = capsys.readouterr().err
    assert err.startswith("avflow train: error: toy: ") and "nosuchkey" in err


def test_an_unknown_recipe_is_one_line_naming_the_shipped_ones(tmp_path):
    done = subprocess.run([sys.executable, "-m", "avflow.cli", "train", "toyy"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("avflow train: error: toyy: no such config file"), done.stderr
    assert "did you mean toy?" in lines[0] and "mmaudio_finetune" in lines[0] and "under codecs/" in lines[0]


@pytest.mark.parametrize("name", ["../experiments/fusion", "/nonexistent/toy.yaml", "codecs"])
def test_a_name_outside_the_recipes_is_refused(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"avflow train: error: {name}: no such config file")


def test_experiments_and_the_card_prompts_come_from_the_package(tmp_path, monkeypatch):
    from avflow.experiments.configs import EXPERIMENTS_DIR, experiment_names, load_experiment

    assert EXPERIMENTS_DIR.resolve().is_relative_to(PACKAGE)  # not the folder above the package (site-packages)
    assert {"fusion", "alignment", "guidance", "t2v_vs_joint"} <= set(experiment_names())
    monkeypatch.chdir(tmp_path)
    assert load_experiment("fusion").name == "fusion"
    from avflow.commands.experiment import default_prompts  # `avflow experiment --model`'s --prompts default

    prompts = default_prompts()
    assert prompts.is_file() and prompts.resolve().is_relative_to(PACKAGE)


def test_the_repository_folders_link_into_the_package():
    for name in ("configs", "experiments"):
        link = REPO / name
        assert link.is_symlink() and not Path(link.readlink()).is_absolute(), name  # relative: a clone keeps it
        assert link.resolve() == PACKAGE / "assets" / name


def test_help_names_recipes_a_pip_user_has(capsys):
    assert main(["foley", "--help"]) == 0
    assert "avflow train mmaudio_finetune" in " ".join(capsys.readouterr().out.split())  # help wraps lines
    assert main(["train", "--help"]) == 0
    assert "shipped" in capsys.readouterr().out
