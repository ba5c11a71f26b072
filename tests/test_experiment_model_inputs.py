"""`avflow experiment NAME --model ...`: its prompt file and NFE budget are checked before any model loads. A prompt
that names no world object, an NFE below one step of some arm with the model's solver, or a missing prompt file is
one line and nothing written; `configs/NAME.json` names a shipped prompt file outside the repository too."""

from __future__ import annotations

import json

import pytest

from avflow.cli import main
from avflow.errors import ConfigError


class Loaded(Exception):
    """Raised where the model would load: every input check has passed by then."""


@pytest.fixture
def no_model(monkeypatch, tmp_path):
    """Runs in an empty folder (no `configs/` link) with model loading replaced by `Loaded`."""
    import avflow.pipelines.default_model as dm

    def load(path=None):
        raise Loaded(path)

    monkeypatch.setattr(dm, "load_default_model", load)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _experiment(capsys, *extra: str) -> str:
    """`avflow experiment guidance --model default --seeds 1 --out exp/one ...`: its one error line."""
    assert main(["experiment", "guidance", "--model", "default", "--seeds", "1", "--out", "exp/one", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _prompt_file(folder, prompt: str) -> str:
    path = folder / "mine.json"
    path.write_text(json.dumps({"prompts": [{"id": "q0", "prompt": prompt, "seed": 0}]}))
    return str(path)


def test_a_prompt_naming_no_world_object_is_refused_before_the_model_loads(no_model, capsys):
    mine = _prompt_file(no_model, "a steady 440 Hz tone over a test pattern")
    err = _experiment(capsys, "--prompts", mine, "--nfe", "6")
    assert "--prompts" in err and "prompt q0 names no world object (a colour and a shape word)" in err
    assert "world-style" in err and not (no_model / "exp").exists()
    with pytest.raises(ConfigError, match="prompt q0 names no world object"):
        from avflow.experiments.trained import read_prompt_rows

        read_prompt_rows(no_model / "mine.json")
    assert main(["experiment", "--help"]) == 0
    assert "every prompt must be world-style" in " ".join(capsys.readouterr().out.split()).replace("- ", "-")


def test_the_shipped_prompt_files_are_world_style():
    from avflow.experiments.trained import read_prompt_rows, shipped_prompt_files

    files = shipped_prompt_files()
    assert {"bench_prompts.json", "model_card_prompts.json"} <= set(files)
    assert all(read_prompt_rows(path) for path in files.values())


def test_an_nfe_below_one_step_of_an_arm_with_the_models_solver_is_refused(no_model, capsys):
    """The shipped model samples with midpoint (2 evaluations per step): modality_text_cfg needs 3 x 2."""
    err = _experiment(capsys, "--nfe", "4")
    assert err.endswith("--nfe 4 is below one step of modality_text_cfg with the midpoint solver (6 evaluations)")
    err = _experiment(capsys, "--nfe", "2", "--solver", "euler")
    assert err.endswith("--nfe 2 is below one step of modality_text_cfg with the euler solver (3 evaluations)")
    assert not (no_model / "exp").exists()
    with pytest.raises(Loaded):  # one step of every arm fits: the run goes on to load the model
        main(["experiment", "guidance", "--model", "default", "--seeds", "1", "--nfe", "6", "--out", "exp/one"])


def test_sampling_steps_raise_below_one_step_instead_of_taking_one():
    from avflow.experiments.configs import sampling_steps

    with pytest.raises(ConfigError, match=r"below one step of guidance modality_text with the midpoint solver \(6 "):
        sampling_steps("modality_text", 4, "midpoint")
    assert sampling_steps("modality_text", 6, "midpoint") == 1 and sampling_steps("plain", 4, "midpoint") == 1


def test_a_tiny_model_checks_the_nfe_against_its_solver_before_it_loads(no_model):
    from helpers import write_tiny_default_model

    from avflow.experiments.configs import load_experiment
    from avflow.experiments.trained import run_on_model

    model = write_tiny_default_model(no_model / "model")
    prompts = _prompt_file(no_model, "a red ball bounces twice on the left")
    exp = load_experiment("guidance")
    with pytest.raises(ConfigError, match=r"--nfe 5 is below one step of modality_text_cfg with the midpoint solver"):
        run_on_model(exp, str(model), prompts, no_model / "out", 1, nfe=5, log=lambda *_: None, solver="midpoint")
    assert not (no_model / "out").exists()


def test_configs_names_a_shipped_prompt_file_outside_the_repository(no_model, capsys):
    from avflow.experiments.trained import read_prompt_rows

    assert not (no_model / "configs").exists()
    with pytest.raises(Loaded):
        main(["experiment", "guidance", "--model", "default", "--prompts", "configs/bench_prompts.json", "--seeds",
              "1", "--nfe", "6", "--out", "exp/one"])  # fmt: skip
    err = _experiment(capsys, "--prompts", "configs/nope.json", "--nfe", "6")
    assert "--prompts configs/nope.json: not found" in err and "not a prompt file" not in err
    with pytest.raises(ConfigError, match=r"nope.json: not found$"):
        read_prompt_rows(no_model / "nope.json")
