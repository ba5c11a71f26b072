"""Command-line arguments that must not be silently dropped or misnamed: an override given twice, `cache build`
options its --source does not read, and errors that name the option or thing at fault (before any slow work)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from avflow.cli import main
from avflow.config import apply_overrides
from avflow.errors import ConfigError, Note


def test_an_override_given_twice_or_after_its_section_is_not_silent():
    """A key given again wins with a note (scripts/train_default_v2.py layers a cycle's data file over the shared
    one); a key inside a section given before is refused, as the section sets all of it."""
    with pytest.warns(Note, match=r"^train.steps given twice \(1, then 2\): the last is used$"):
        assert apply_overrides({}, ["train.steps=1", "train.steps=2"]) == {"train": {"steps": "2"}}
    with pytest.warns(Note, match=r"^train given after train.steps \(1, then \{steps: 2\}\): the last is used$"):
        apply_overrides({}, ["train.steps=1", "train={steps: 2}"])
    with pytest.raises(ConfigError, match=r"^train and train.steps both given \(train=... sets all of train\)"):
        apply_overrides({"train": {"steps": 5}}, ["train={steps: 2}", "train.steps=1"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no clash, no note
        got = apply_overrides({}, ["train.steps=1", "train.seed=2", "train_x=3", "train.stepsx=4"])
    assert got == {"train": {"steps": "1", "seed": "2", "stepsx": "4"}, "train_x": "3"}


def test_train_says_which_override_it_used_when_one_is_given_twice(capsys):
    assert main(["train", "toy", "train.steps=1", "train.steps=2", "--print-config"]) == 0
    got = capsys.readouterr()
    assert "avflow train: note: train.steps given twice (1, then 2): the last is used" in got.err
    assert "  steps: 2\n" in got.out


def _weights(tmp_path: Path) -> list[str]:
    (tmp_path / "w.pth").write_bytes(b"w")
    return [arg for flag in ("--clip-weights", "--synchformer-weights", "--vae-weights") for arg in (flag, str(
        tmp_path / "w.pth"))]  # fmt: skip


@pytest.fixture
def no_reading(monkeypatch):
    """Reading a table or a world's manifest fails the test: the argument errors come first."""
    from avflow.data import datasets

    def read(*args, **kwargs):
        raise AssertionError("the clips were read")

    for name in ("read_world", "read_captions", "read_audiocaps", "read_vggsound"):
        monkeypatch.setattr(datasets, name, read)


@pytest.mark.parametrize(
    "extra, expected",
    [(["--source", "world", "--table", "x.csv"], "--table is not used with --source world"),
     (["--source", "captions", "--table", "t.csv", "--split", "val"], "--split is only for --source vggsound"),
     (["--source", "audiocaps", "--table", "t.csv", "--split", "val"], "not audiocaps: drop it"),
     (["--source", "world", "--device", "tpu"], "--device 'tpu': expected cpu, cuda, cuda:N or auto")],
)  # fmt: skip
def test_cache_build_refuses_options_its_source_does_not_read_before_reading(extra, expected, tmp_path, capsys,
                                                                            no_reading):  # fmt: skip
    out = tmp_path / "cache"
    assert main(["cache", "build", str(out), "--media", str(tmp_path), *extra, *_weights(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("avflow cache: error: ") and expected in err[0], err
    assert not out.exists()


def test_cache_without_an_action_names_the_actions(capsys):
    assert main(["cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert "{build,info,joint}" in err and "action" not in err


def test_train_on_a_folder_says_it_is_a_folder(tmp_path, capsys):
    assert main(["train", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{tmp_path}: a folder, not a config file" in err and "no such" not in err


def test_cache_joint_names_model_when_its_folder_is_wrong(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("file,caption\na.mp4,a dog\n")
    base = ["cache", "joint", str(tmp_path / "k.safetensors"), "--table", str(table), "--media", str(tmp_path)]
    assert main([*base, "--model", str(tmp_path / "bogus")]) == 2
    assert main([*base, "--model", str(table)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == (f"avflow cache: error: --model {tmp_path / 'bogus'}: not found (a model folder holds "
                      "config.json and joint.safetensors; leave --model out for the shipped model)")  # fmt: skip
    assert err[1].startswith(f"avflow cache: error: --model {table}: is a file")


def test_a_rank_other_than_0_waits_before_exiting_on_an_every_rank_error(monkeypatch, capsys):
    # before: rank 1 exited at once with status 2, torchrun then stopped rank 0 before it printed the shared error,
    # and the run ended with no `avflow train: error:` line at all (seen in a loaded test run)
    import avflow.cli as cli

    slept = []
    monkeypatch.setattr(cli.time, "sleep", slept.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["train", "no_such_recipe_here"]) == 2
    assert slept == [cli.EVERY_RANK_GRACE_S] and capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert cli.main(["train", "no_such_recipe_here"]) == 2
    assert slept == [cli.EVERY_RANK_GRACE_S] and capsys.readouterr().err.count("avflow train: error:") == 1
