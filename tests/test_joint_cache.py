"""`avflow cache joint`: one's own clips (video with sound) and a caption table into the training file of the joint
model, in the model folder's clip format, codecs and text encoder (`cache_split`'s layout), which `avflow train`
trains the joint model on; skipped clips listed in OUT.failed.tsv; bad input a one-line error before any codec
loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import one_step_joint_run, write_tiny_default_model

from avflow.cli import main
from avflow.codecs.world import load_world_codecs
from avflow.config import to_dict
from avflow.data.media import write_video
from avflow.encoders.text import load_text_encoder
from avflow.pipelines.default_model import read_default_config
from avflow.weights import read_metadata, read_state_dict

SR = 16000
CAPTIONS = {"wide": "a drum beats on the right", "round": "a bell rings twice", "brief": "too short to use"}


def clip(path: Path, *, seconds: float, width: int, height: int = 32, fps: float = 16, channels: int = 2) -> Path:
    """An mp4 of moving noise with a tone (`channels` channels)."""
    g = np.random.default_rng(len(path.name))
    frames = g.integers(0, 255, (round(seconds * fps), height, width, 3), dtype=np.uint8)
    t = np.arange(round(seconds * SR)) / SR
    audio = np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]).astype(np.float32)
    return write_video(path, frames, fps, audio, SR)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny model folder and three clips: `wide` (48x32, 2.5 s: cropped, cut), `round` (mono, 20 fps), `brief`
    (1 s: skipped), with a caption table naming them in that order."""
    work = tmp_path_factory.mktemp("joint_cache")
    write_tiny_default_model(work / "model")
    media = work / "media"
    clip(media / "wide.mp4", seconds=2.5, width=48)
    clip(media / "round.mp4", seconds=2.0, width=32, fps=20, channels=1)
    clip(media / "brief.mp4", seconds=1.0, width=32)
    (work / "captions.tsv").write_text("".join(f"{name}.mp4\t{text}\n" for name, text in CAPTIONS.items()))
    return work


def run(work: Path, out: Path, *more: str, table: str = "captions.tsv", model: str = "model") -> int:
    return main(["cache", "joint", str(out), "--table", str(work / table), "--media", str(work / "media"),
                 "--model", str(work / model), *more])  # fmt: skip


@pytest.fixture(scope="module")
def built(data) -> tuple[Path, str]:
    """The file `avflow cache joint` writes for the clips, and what it printed."""
    import contextlib
    import io

    out = data / "train.safetensors"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run(data, out) == 0
    return out, printed.getvalue()


def test_the_file_has_the_layout_the_joint_model_trains_on(data, built):
    out, _ = built
    tensors = read_state_dict(out)
    codecs = load_world_codecs(data / "model" / "codecs")
    config = read_default_config(data / "model")
    frames = round(config.duration * config.fps)
    latents = codecs.audio.latent_length(round(config.duration * config.sample_rate))
    assert tensors["streams.video"].shape == (
        2,
        codecs.video.latent_channels,
        *codecs.video.latent_shape(frames, config.height, config.width),
    )
    for ear in ("left", "right"):
        assert tensors[f"streams.{ear}"].shape == (2, latents, codecs.audio.latent_channels)
    states, mask = load_text_encoder("tiny", max_len=config.joint.text_len)([CAPTIONS["wide"], CAPTIONS["round"]])
    torch.testing.assert_close(tensors["cond.text"], states)  # the table's order, the skipped clip left out
    assert torch.equal(tensors["cond.text_mask"], mask)
    assert read_metadata(out)["codecs_checksum"] == codecs.checksum
    mono = tensors["streams.left"][1], tensors["streams.right"][1]
    torch.testing.assert_close(*mono)  # the mono clip's sound in both ears


def test_skipped_clips_are_listed_and_the_summary_counts_what_was_done(built):
    out, printed = built
    lines = printed.strip().splitlines()
    assert len(lines) == 1, printed
    line = lines[0]
    failed = out.with_suffix(".failed.tsv")
    assert f"2 clips written, 1 skipped (listed in {failed})" in line
    assert "1 longer than 2 s cut to their first 2 s" in line and "1 of another aspect centre-cropped to 32x32" in line
    assert "1 mono copied to both ears" in line and "binaural" in line
    rows = [r.split("\t") for r in failed.read_text().splitlines()]
    assert rows[0] == ["id", "file", "reason"] and len(rows) == 2
    assert rows[1][0] == "brief" and "video shorter than 2 s" in rows[1][2]


def test_one_training_step_of_the_tiny_joint_model_runs_on_the_file(data, built, tmp_path):
    out, _ = built
    config = read_default_config(data / "model")
    run_config = one_step_joint_run(tmp_path / "run", out, to_dict(config.joint), batch_size=2)
    run_config["init"] = {"weights": str(data / "model" / "joint.safetensors")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(run_config))
    assert main(["train", str(path)]) == 0
    assert list((tmp_path / "run" / "checkpoints").iterdir())


def one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    return err


@pytest.fixture
def no_codecs(monkeypatch):
    """Loading a codec fails the test: the errors come before."""

    def refuse(*args, **kwargs):
        raise AssertionError("codecs loaded before the inputs were checked")

    monkeypatch.setattr("avflow.codecs.world.load_world_codecs", refuse)


def test_bad_input_is_one_line_before_any_codec_loads(data, built, tmp_path, capsys, no_codecs):
    out = tmp_path / "new.safetensors"
    capsys.readouterr()
    assert "exists" in one_line_error(capsys, run(data, built[0]))
    assert "caption table not found" in one_line_error(capsys, run(data, out, table="nope.tsv"))
    assert "not found" in one_line_error(capsys, run(data, out, model="no_model"))
    code = main(["cache", "joint", str(out), "--table", str(data / "captions.tsv"), "--media", str(tmp_path / "gone"),
                 "--model", str(data / "model")])  # fmt: skip
    assert "media folder not found" in one_line_error(capsys, code)
    (data / "short.tsv").write_text("brief.mp4\tonly this\n")
    err = one_line_error(capsys, run(data, out, table="short.tsv"))
    assert "no usable clip" in err and "video shorter than 2 s" in err
    assert not out.exists()


def test_a_missing_text_extra_is_one_line_before_any_codec_loads(data, tmp_path, capsys, monkeypatch, no_codecs):
    model = tmp_path / "minilm_model"
    shutil.copytree(data / "model", model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "text_encoder": "minilm"}))
    monkeypatch.setitem(__import__("avflow.encoders.text").encoders.text.TEXT_EXTRA, "no_such_module_x", "nosuch")
    code = main(["cache", "joint", str(tmp_path / "o.safetensors"), "--table", str(data / "captions.tsv"),
                 "--media", str(data / "media"), "--model", str(model)])  # fmt: skip
    assert "[text] extra" in one_line_error(capsys, code)


def test_of_three_channels_the_front_two_are_the_ears(tmp_path):
    """A 3-channel WAV has FFmpeg's 2.1 layout (FL FR LFE): its downmix to stereo is its first two channels (a 5.1
    track's: `test_joint_cache_inputs`)."""
    import soundfile as sf

    from avflow.pipelines.joint_cache import ClipFormat, read_sound

    wave = np.random.default_rng(0).uniform(-0.5, 0.5, (SR * 2, 3)).astype(np.float32)
    sf.write(tmp_path / "three.wav", wave, SR, subtype="FLOAT")
    fmt = ClipFormat(duration=2.0, fps=16, height=32, width=32, sample_rate=SR)
    ears, channels = read_sound(tmp_path / "three.wav", fmt)
    assert channels == 3 and ears.shape == (2, SR * 2)
    torch.testing.assert_close(ears, torch.from_numpy(wave[:, :2].T.copy()))
