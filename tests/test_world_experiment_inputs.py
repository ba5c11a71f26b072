"""Inputs of world clips and experiments refused in one line before any work: a clip json that is not a world clip's
meta, an experiment YAML path that is missing or settings it cannot run, a device that is not here; and the world
make help saying the split sizes `split_sizes` gives."""

from __future__ import annotations

import json
import re

import pytest

from avflow.cli import main as cli_main
from avflow.errors import ConfigError, MediaError
from avflow.world.dataset import load_clip, make_clip, split_sizes, write_clip
from avflow.world.scene import WorldConfig

TINY_CONFIG = WorldConfig(height=16, width=16, fps=8, duration=0.25, sample_rate=4000)  # 2 frames, 1000 samples


@pytest.fixture
def world_stem(tmp_path):
    """One tiny world clip written as `avflow world make` writes it: its path without suffix."""
    stem = tmp_path / "w" / "test_000000"
    write_clip(make_clip(1, TINY_CONFIG, "test_000000"), stem)
    return stem


@pytest.mark.parametrize(
    ("meta", "message"),
    [([], "expected a world clip's meta (a json object"), ("x", "got a json str"),
     ({"id": "a"}, "no sample_rate"), ("drop fps", "no fps"), ({"sample_rate": "4000", "fps": 8}, "sample_rate must"),
     ({"sample_rate": 4000, "fps": True}, "fps must be a number > 0, got true")],
)  # fmt: skip
def test_a_clip_json_that_is_not_a_world_meta_is_a_media_error(world_stem, meta, message):
    """A json list crashed every reader (AttributeError: 'list' object has no attribute 'get') and one without the
    rates said "expected stereo at None Hz": a one-line MediaError naming the file and what is wrong."""
    path = world_stem.with_suffix(".json")
    if meta == "drop fps":
        meta = {k: v for k, v in json.loads(path.read_text()).items() if k != "fps"}
    path.write_text(json.dumps(meta))
    with pytest.raises(MediaError, match=re.escape(message)) as info:
        load_clip(world_stem)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_eval_reports_the_clip_with_a_list_json_instead_of_crashing(world_stem, capsys):
    """`avflow eval DIR` crashed on the whole folder; the clip is skipped with its reason (here the only one)."""
    world_stem.with_suffix(".json").write_text("[]")
    assert cli_main(["eval", str(world_stem.parent)]) == 2
    err = capsys.readouterr().err.strip()
    assert "test_000000.json: expected a world clip's meta" in err and "\n" not in err, err


def _experiment(tmp_path, extra: str = "", name: str = "exp.yaml"):
    path = tmp_path / name
    path.write_text(f"name: e\ndescription: d\nbaseline: a\nmetrics: [nfe]\n{extra}arms:\n  - {{name: a}}\n")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [("seeds: 0\n", "seeds: training seeds per arm must be an integer >= 1, got 0"),
     ("seeds: -2\n", "seeds: training seeds per arm must be an integer >= 1, got -2"),
     ("cfg_strength: 0\n", "cfg_strength must be a finite number > 0"),
     ("text_cfg_strength: .nan\n", "text_cfg_strength must be a finite number > 0")],
)  # fmt: skip
def test_experiment_settings_it_cannot_run_are_refused(tmp_path, extra, message):
    """`seeds: 0` ran and "succeeded" with nothing measured; a strength of 0 failed only after training."""
    from avflow.experiments.configs import load_experiment

    path = _experiment(tmp_path, extra)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_experiment(str(path))
    assert str(info.value).startswith(f"{path}: ")


def test_an_experiment_path_that_is_missing_says_so(tmp_path, monkeypatch):
    """A path said "unknown experiment '/tmp/missing.yaml' (choose from ...)"; a shipped name still loads (even with a
    file of that name in the working folder)."""
    from avflow.experiments.configs import load_experiment

    monkeypatch.chdir(tmp_path)
    cases = {str(tmp_path / "missing.yaml"): "missing.yaml: no such file", "missing.yml": "missing.yml: no such file",
             str(tmp_path / "none"): "none: no such file", str(tmp_path): f"{tmp_path}: a folder, not a YAML file",
             "nosuch": "unknown experiment 'nosuch' (choose from "}  # fmt: skip
    (tmp_path / "notes.txt").write_text("x")
    cases[str(tmp_path / "notes.txt")] = "notes.txt: not a .yaml or .yml file name"
    for arg, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_experiment(arg)
    (tmp_path / "guidance").write_text("x")
    assert load_experiment("guidance").name == "guidance"
    assert load_experiment(str(_experiment(tmp_path, name="e.YML"))).name == "e"


def test_an_unavailable_device_is_refused_before_the_world_data(tmp_path, monkeypatch, capsys):
    """`--device cuda` without a GPU rendered the world data and encoded features (10 s, 47 MB) before failing."""
    import torch

    from avflow.experiments import runner

    def started(*args, **kwargs):
        raise AssertionError("the experiment started")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runner, "run_experiment", started)
    out = tmp_path / "g"
    args = ["experiment", "guidance", "--device", "cuda", "--seeds", "1", "--steps", "1", "--out", str(out)]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--device cuda: no CUDA GPU is available here" in err and "\n" not in err, err
    assert not out.exists()


def test_world_make_help_gives_the_split_sizes(capsys):
    """The help said val and test get max(1, round(0.1 n)) each, but `--n 2` gives train 2, val 0, test 0."""
    assert cli_main(["world", "make", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    sizes = split_sizes(2)
    assert f"--n 2: train {sizes['train']}, val {sizes['val']}, test {sizes['test']}" in text
    assert split_sizes(15) == {"train": 11, "val": 2, "test": 2} and "14 -> 15 does not, train 12 -> 11" in text
