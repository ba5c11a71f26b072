"""Arguments of `avflow experiment` with --model and of `avflow cache build`: help that says what a default is, a
flag that does not apply refused in one line, `-y` for --overwrite as everywhere, and errors naming the right help."""

from __future__ import annotations

import pytest

from avflow.cli import main


def _help(capsys, argv: list[str]) -> str:
    assert main([*argv, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())


def test_experiment_help_names_the_out_folder_of_a_model_run(capsys):
    text = _help(capsys, ["experiment"])
    assert "with --model: NAME_model_M" in text and "guidance_model_default" in text


def test_experiment_refuses_a_size_with_a_model(tmp_path, monkeypatch, capsys):
    from avflow.experiments import trained

    monkeypatch.chdir(tmp_path)  # its default --out folder is not made in the repository

    def sample(*args, **kwargs):  # where --size was ignored: the run would start here
        raise AssertionError("--size small was not refused")

    monkeypatch.setattr(trained, "run_on_model", sample)
    assert main(["experiment", "guidance", "--model", "default", "--size", "small"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--size small does not apply with --model" in err[0]


def _build(tmp_path, *extra: str) -> list[str]:
    weights = [str(tmp_path / f"{name}.pth") for name in ("clip", "sync", "vae")]
    return [
        "cache",
        "build",
        str(tmp_path / "cache"),
        "--source",
        "world",
        "--media",
        str(tmp_path / "world"),
        "--clip-weights",
        weights[0],
        "--synchformer-weights",
        weights[1],
        "--vae-weights",
        weights[2],
        *extra,
    ]


@pytest.mark.parametrize("flag", ["-y", "--overwrite"])
def test_cache_build_takes_y_for_overwrite(tmp_path, monkeypatch, flag):
    from avflow.commands import cache

    seen = []

    def run(args):  # the parsed arguments only: nothing is built
        seen.append(args.overwrite)
        return 0

    monkeypatch.setattr(cache, "run", run)
    assert main(_build(tmp_path, flag)) == 0
    assert seen == [True]


def test_cache_build_names_its_own_help_for_an_unknown_argument(tmp_path, capsys):
    assert main(_build(tmp_path, "--bogus")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments: --bogus" in err[0]
    assert "(see avflow cache build --help)" in err[0]
