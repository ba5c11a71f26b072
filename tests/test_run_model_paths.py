"""`--model RUN` (a training run of the joint model) from any folder: the relative `init.weights` and
`data.train.args.file` in its config.yaml are found where `avflow train` ran (its `out_dir` as typed ends the run's
path), else in the current folder or beside the run; an `init.weights` found nowhere is a one-line error (it silently
gave the shipped model's clip format, sampling and codecs); a run trained on clips of another grid than the clip
format it generates says so in one note."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import write_tiny_default_model

from avflow.cli import main
from avflow.config import to_dict
from avflow.data.media import probe
from avflow.errors import MissingPathError, WeightsWarning
from avflow.pipelines.default_model import load_default_model, read_default_config

SIZE = 32  # the tiny model folder's clip format: 32x32, 2 s at 16 fps (video latents 8x4x4)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The folder `avflow train` ran in: a model folder of one's own (`mymodel`) to fine-tune."""
    work = tmp_path_factory.mktemp("work")
    write_tiny_default_model(work / "mymodel")
    return work


def tiny_cache(path: Path, model: Path, video_shape=(2, 16, 8, 4, 4)) -> Path:
    """A training cache as far as a run's config reads it: video latents of `video_shape`, the codecs' checksum."""
    from avflow.codecs.world import load_world_codecs
    from avflow.weights import save_safetensors

    checksum = load_world_codecs(model / "codecs").checksum
    return save_safetensors({"streams.video": torch.zeros(video_shape)}, path, metadata={"codecs_checksum": checksum})


def tiny_run(work: Path, name: str, *, init: str | None = "mymodel/joint.safetensors", cache: str = "cache.st"
             ) -> Path:  # fmt: skip
    """A run folder as `avflow train` leaves it after `cd work; avflow train ... out_dir=runs/NAME` with relative
    `init.weights` and `data.*.args.file` (its weights: the model folder's own, as fp16)."""
    model = work / "mymodel"
    joint = read_default_config(model)
    run = work / "runs" / name
    run.mkdir(parents=True)
    data = {"name": "tensor_file", "args": {"file": cache}}
    config = {"out_dir": f"runs/{name}", "model": {"name": "joint", "args": to_dict(joint.joint)},
              "task": {"name": "joint_flow"}, "data": {"train": data, "val": data},
              "init": {"weights": init}}  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(model / "joint.safetensors", run / "model.safetensors")
    return run


def test_a_run_reads_its_model_folder_and_data_from_any_folder(work, tmp_path, monkeypatch):
    tiny_cache(work / "cache.st", work / "mymodel")
    run = tiny_run(work, "anywhere")
    for cwd in (work, tmp_path, run, Path("/")):
        monkeypatch.chdir(cwd)
        config = read_default_config(run)
        assert (config.height, config.width, config.duration) == (SIZE, SIZE, 2.0), cwd
        assert config.training["settings_from"] == str(work / "mymodel"), cwd
        assert config.training["data"] == str(work / "cache.st"), cwd  # the codecs checksum is read from it
    monkeypatch.chdir(tmp_path)  # `cd /tmp && avflow generate --model aud10_own/runs/ftmine`: a relative --model
    out = tmp_path / "clip.mp4"
    argv = ["generate", "a ball", "--model", os.path.relpath(run), "--steps", "1", "--duration", "1", "-o", str(out)]
    assert main(argv) == 0
    info = probe(out)
    assert (info.width, info.height) == (SIZE, SIZE)


def test_a_moved_run_finds_what_lies_beside_it(work, tmp_path, monkeypatch):
    """A run copied elsewhere with its model folder beside it: its out_dir no longer ends its path, the run
    folder's parent holds what config.yaml names."""
    tiny_cache(work / "cache.st", work / "mymodel")
    run = tiny_run(work, "moved")
    moved = tmp_path / "elsewhere"
    shutil.copytree(run, moved / "ft")
    shutil.copytree(work / "mymodel", moved / "mymodel")
    monkeypatch.chdir("/")
    assert read_default_config(moved / "ft").training["settings_from"] == str(moved / "mymodel")


def test_init_weights_found_nowhere_is_a_one_line_error(work, tmp_path, monkeypatch):
    run = tiny_run(work, "lost", init="gone/joint.safetensors")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingPathError) as err:
        read_default_config(run)
    message = str(err.value)
    assert "init.weights gone/joint.safetensors not found" in message and "\n" not in message
    assert str(work / "gone" / "joint.safetensors") in message and str(tmp_path / "gone") in message
    out = tmp_path / "o.mp4"
    assert main(["generate", "a ball", "--model", str(run), "--steps", "1", "-o", str(out)]) == 2
    assert not out.exists()


def test_a_run_trained_on_another_clip_grid_says_so(work, tmp_path, monkeypatch):
    tiny_cache(work / "big.st", work / "mymodel", video_shape=(2, 16, 12, 6, 6))  # 48x48, 3 s
    tiny_cache(work / "same.st", work / "mymodel")
    monkeypatch.chdir(work)  # where the training ran (found before the paths were resolved from elsewhere)
    with pytest.warns(WeightsWarning) as heard:
        load_default_model(tiny_run(work, "big", cache="big.st"))
    notes = [str(w.message) for w in heard if "trained on" in str(w.message)]
    assert len(notes) == 1 and "\n" not in notes[0], [str(w.message) for w in heard]
    assert "video latents 12x6x6: 48x48, 3 s clips" in notes[0] and f"{SIZE}x{SIZE}, 2 s (latents 8x4x4)" in notes[0]
    with pytest.warns(WeightsWarning) as heard:
        load_default_model(tiny_run(work, "same", cache="same.st"))
    assert not [w for w in heard if "trained on" in str(w.message)]
