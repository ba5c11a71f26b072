"""`avflow train` from a model folder's weights: a training file made for another clip format or other codecs than
the folder's config.json is refused in one line before the model is built, naming both; the shipped recipes'
`init.weights: avflow/assets/...` runs outside the repository (the installed package's copy, said in a note); and
`avflow experiment guidance --prompts` says what a prompt file is, and takes the list of rows alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import write_tiny_default_model

from avflow import assets_dir
from avflow.cli import main
from avflow.errors import ConfigError
from avflow.weights import save_safetensors

SHIPPED = assets_dir() / "default_model"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_tiny_default_model(tmp_path_factory.mktemp("tiny_v2") / "mymodel")


def latent_file(path: Path, model: Path, rows: int = 2, **metadata) -> Path:
    """Zero latents in the shapes the model folder's joint network takes (2 s clips), with `metadata`."""
    return zero_latents(path, json.loads((model / "config.json").read_text()), rows, metadata)


def zero_latents(path: Path, config: dict, rows: int, metadata: dict) -> Path:
    """A training file of zero latents in the shapes of a model folder's config.json (`streams.*`, `cond.*`)."""
    joint = config["joint"]
    frames = round(config["duration"] * config["fps"]) // joint["video_temporal_stride"]
    video = (rows, joint["video"]["in_channels"], frames, config["height"] // 8, config["width"] // 8)
    audio = (rows, round(config["duration"] * joint["audio_latent_rate"]), joint["audio"]["latent_dim"] // 2)
    text = joint["text_len"]
    tensors = {"streams.video": torch.zeros(video), "streams.left": torch.zeros(audio),
               "streams.right": torch.zeros(audio), "cond.text": torch.zeros(rows, text, joint["text_dim"]),
               "cond.text_mask": torch.ones(rows, text, dtype=torch.bool)}  # fmt: skip
    return save_safetensors(tensors, path, metadata=metadata)


def clip_format(**changes) -> str:
    fmt = {"duration": 2.0, "fps": 16, "height": 32, "width": 32, "sample_rate": 16000, "text_encoder": "tiny"}
    return json.dumps(fmt | changes)


def train(model: Path, train_file: Path, val_file: Path, out: Path, *extra: str) -> int:
    joint = json.dumps(json.loads((model / "config.json").read_text())["joint"])
    return main(["train", "default_joint_v2_cycle", f"init.weights={model / 'joint.safetensors'}",
                 f"model.args={joint}", f"data.train.args.file={train_file}", f"data.val.args.file={val_file}",
                 f"out_dir={out}", "train.steps=1", "train.batch_size=2", "log.val_every=0", "checkpoint.every=1",
                 "schedule.warmup_steps=0", *extra])  # fmt: skip


def test_a_file_of_another_clip_format_or_codecs_is_refused_naming_both(model_dir, tmp_path, capsys):
    checksum = json.loads((model_dir / "config.json").read_text())["codecs_checksum"]
    fits = latent_file(tmp_path / "fits.safetensors", model_dir, codecs_checksum=checksum, clip_format=clip_format())
    larger = latent_file(tmp_path / "larger.safetensors", model_dir, codecs_checksum=checksum,
                         clip_format=clip_format(height=96, width=96, duration=3.0))  # fmt: skip
    world = latent_file(tmp_path / "world.safetensors", model_dir, codecs_checksum="0" * 64)  # no clip_format
    cases = {
        (larger, fits): ("data.train", "larger.safetensors", "duration 3 vs 2, height 96 vs 32, width 96 vs 32"),
        (fits, world): ("data.val", "world.safetensors", "codecs_checksum 000000000000 vs " + checksum[:12]),
    }
    for (train_file, val_file), (where, name, both) in cases.items():
        out = tmp_path / f"run_{name}"
        assert train(model_dir, train_file, val_file, out) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err, err
        assert f"{where}.args.file {tmp_path / name} was made for another model" in err, err
        assert both in err and str(model_dir / "config.json") in err and str(model_dir / "joint.safetensors") in err
        assert not out.exists()


def test_a_file_that_fits_or_records_nothing_trains(model_dir, tmp_path, capsys):
    checksum = json.loads((model_dir / "config.json").read_text())["codecs_checksum"]
    fits = latent_file(tmp_path / "fits.safetensors", model_dir, codecs_checksum=checksum, clip_format=clip_format())
    older = latent_file(tmp_path / "older.safetensors", model_dir)  # an older cache: no metadata
    assert train(model_dir, fits, older, tmp_path / "run", "ema.enabled=false") == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()


SHIPPED_TYPED = "avflow/assets/default_model/joint.safetensors"  # as the recipe names it


def test_the_cycle_recipe_finds_the_installed_shipped_weights_outside_the_repository(tmp_path, monkeypatch, capsys):
    """From a folder without avflow/assets/: the recipe's relative init.weights is the installed package's file, said
    in a note, and its folder's config.json is the one the data is checked against (the shipped model's)."""
    monkeypatch.chdir(tmp_path)
    config = json.loads((SHIPPED / "config.json").read_text())
    data = zero_latents(tmp_path / "data.safetensors", config, 2, {"codecs_checksum": "0" * 64})
    args = ["train", "default_joint_v2_cycle", f"data.train.args.file={data}", f"data.val.args.file={data}",
            "out_dir=run"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    shipped = SHIPPED / "joint.safetensors"
    assert f"note: init.weights: no {SHIPPED_TYPED} in the current folder; the installed avflow's {shipped}" in err
    assert f"was made for another model than init.weights {shipped}: codecs_checksum 000000000000 vs " in err, err
    assert main([*args, "init.weights=avflow/assets/default_model/nope.safetensors"]) == 2
    assert "init.weights: no such file: 'avflow/assets/default_model/nope.safetensors'" in capsys.readouterr().err


def test_a_run_from_the_installed_weights_records_them(model_dir, tmp_path, monkeypatch, capsys):
    """The run's config.yaml records the installed file it started from, which `generate --model RUN` reads the
    model folder of (here the package's assets folder is a tiny model's copy, so that one step is quick)."""
    import shutil

    import avflow.train.init_checks as init_checks

    assets = tmp_path / "installed" / "assets"
    shutil.copytree(model_dir, assets / "default_model")
    monkeypatch.setattr(init_checks, "assets_dir", lambda: assets)
    monkeypatch.chdir(tmp_path)
    checksum = json.loads((model_dir / "config.json").read_text())["codecs_checksum"]
    data = latent_file(tmp_path / "data.safetensors", model_dir, codecs_checksum=checksum)
    joint = json.dumps(json.loads((model_dir / "config.json").read_text())["joint"])
    assert (
        main(
            [
                "train",
                "default_joint_v2_cycle",
                f"model.args={joint}",
                f"data.train.args.file={data}",
                f"data.val.args.file={data}",
                "out_dir=run",
                "train.steps=1",
                "train.batch_size=2",
                "log.val_every=0",
                "checkpoint.every=1",
                "schedule.warmup_steps=0",
                "ema.enabled=false",
            ]
        )
        == 0
    )
    installed = assets / "default_model" / "joint.safetensors"
    assert f"no {SHIPPED_TYPED} in the current folder; the installed avflow's {installed}" in capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["init"]["weights"] == str(installed)


PROMPTS = [{"id": "a", "prompt": "a red ball bounces twice on the left", "seed": 1}]


def test_a_prompt_file_may_be_the_list_of_rows_alone_and_a_wrong_one_says_what_is_expected(tmp_path):
    from avflow.experiments.trained import read_prompt_rows

    plain, wrapped = tmp_path / "plain.json", tmp_path / "wrapped.json"
    plain.write_text(json.dumps(PROMPTS))
    wrapped.write_text(json.dumps({"prompts": PROMPTS}))
    assert read_prompt_rows(plain) == read_prompt_rows(wrapped) == PROMPTS
    bad = tmp_path / "bad.json"
    for text in ('{"rows": []}', '"a ball"', '[["a", "a red ball", 1]]', '[{"id": "a", "prompt": "a red ball"}]'):
        bad.write_text(text)
        with pytest.raises(ConfigError) as info:
            read_prompt_rows(bad)
        message = str(info.value)
        assert message.startswith(f"{bad}: ") and "\n" not in message, message
        assert 'expected {"prompts": [{"id": ..., "prompt": ..., "seed": ...}, ...]}' in message, message
