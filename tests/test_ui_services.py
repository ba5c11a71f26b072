"""The web UI's services (what each tab does) without Gradio: outputs, defaults from the models, one-line errors.
The Generate tab runs a tiny random default model folder put in place of the shipped one."""

from __future__ import annotations

import os
import threading
import time

import av
import numpy as np
import pytest
from helpers import (
    WeightReads,
    damaged_ts,
    moving_square,
    prores_mov,
    with_subtitles,
    write_tiny_default_model,
)

from avflow.data.media import probe, read_audio, write_audio, write_video
from avflow.errors import AvflowError, MediaError
from avflow.models import binaural as binaural_model
from avflow.models.mmaudio_config import SAMPLING
from avflow.pipelines import default_model
from avflow.pipelines.default_model import read_default_config
from avflow.ui import services
from avflow.ui.services import UISettings, check_video_upload, generate_binaural, generate_foley, generate_joint


@pytest.fixture
def settings(tmp_path) -> UISettings:
    return UISettings(steps=1, output_dir=tmp_path / "ui")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_tiny_default_model(tmp_path_factory.mktemp("tiny_v2"))


@pytest.fixture(autouse=True)
def _tiny_default_model(tiny_model, monkeypatch):
    """The services load the shipped default model once per process: here the tiny folder, loaded afresh."""
    monkeypatch.setattr(default_model, "default_model_dir", lambda: tiny_model)
    services._joint_model.cache_clear()
    yield
    services._joint_model.cache_clear()


def test_guidance_defaults_come_from_the_models(settings):
    assert services.joint_cfg_strength(settings) == read_default_config().sampling.cfg_strength
    assert services.foley_cfg_strength(settings) == SAMPLING.cfg_strength


def test_steps_start_at_each_model_own_unless_given(tmp_path, monkeypatch):
    """Every tab started at 25 steps: for the joint model (13 midpoint steps of its own) twice the cost of `avflow
    generate`. Now each slider starts at its model's steps, and `avflow ui --steps N` at N."""
    monkeypatch.setattr(binaural_model, "MODEL_FILE", tmp_path / "none.safetensors")  # as shipped: no model
    own = UISettings(output_dir=tmp_path / "ui")
    assert services.joint_steps(own) == read_default_config().sampling.steps
    assert services.foley_steps(own) == SAMPLING.steps
    assert services.binaural_steps(own) == binaural_model.SAMPLING.steps
    given = UISettings(output_dir=tmp_path / "ui", steps=7)
    assert services.joint_steps(given) == services.foley_steps(given) == services.binaural_steps(given) == 7


def test_joint_tab_writes_a_clip_and_its_spectrogram(settings):
    result = generate_joint("a red ball bounces", settings, seed=1, duration=0.5, cfg_strength=2.0)
    info = probe(result.video)
    assert info.has_video and info.audio_channels == 2 and result.spectrogram.is_file()
    assert result.summary.startswith("t2av, 0.50 s.") and "sync_offset_ms: " in result.summary
    assert "nan" not in result.summary.lower()  # each measure a value or `- (why)`
    with pytest.raises(AvflowError, match="write a prompt"):
        generate_joint("  ", settings)
    with pytest.raises(AvflowError, match="duration must be between"):
        generate_joint("a ball", settings, duration=60.0)
    with pytest.raises(AvflowError, match="cfg_strength must be a finite number > 0"):
        generate_joint("a ball", settings, duration=0.5, cfg_strength=0.0)


def test_joint_tab_runs_every_task_on_whole_uploads(settings, tmp_path):
    """a2v on a 3 s sound (two windows), v2a onto an uploaded video (its packets kept), continue an uploaded clip."""
    frames = np.repeat(np.repeat(moving_square(t=40, h=16, w=32), 2, axis=1), 2, axis=2)  # 2.5 s, 32x64
    sound = np.random.default_rng(0).standard_normal((1, 40000)).astype(np.float32) * 0.05
    clip = write_video(tmp_path / "in.mp4", frames, 16, audio=sound, sample_rate=16000)
    wav = write_audio(tmp_path / "sound.wav", np.tile(sound, (1, 2))[:, :48000], 16000)
    a2v = generate_joint("a ball", settings, task="a2v", audio_path=wav)
    assert probe(a2v.video).n_frames == 48 and a2v.summary.startswith("a2v, 3.00 s in 2 windows.")
    v2a = generate_joint("a ball", settings, task="v2a", video_path=clip, existing_audio="replace")
    with av.open(str(v2a.video)) as out, av.open(str(clip)) as source:
        assert [bytes(p) for p in out.demux(out.streams.video[0]) if p.size] == [
            bytes(p) for p in source.demux(source.streams.video[0]) if p.size
        ]
        assert len(out.streams.audio) == 1 and out.streams.audio[0].channels == 2
    subtitled = with_subtitles(tmp_path / "subtitled.mkv", "subrip", b"hallo")  # an mp4 cannot hold SRT
    said = generate_joint("a ball", settings, task="v2a", video_path=subtitled).summary
    assert "; its srt subtitles left out (an mp4 cannot hold them)." in said
    longer = generate_joint("a ball", settings, task="continue", video_path=clip, duration=1.0)
    assert probe(longer.video).n_frames == 40 + 16 and longer.summary.startswith("continue, 3.50 s")
    with pytest.raises(MediaError, match="upload a sound first"):
        generate_joint("a ball", settings, task="a2v")
    silent = write_video(tmp_path / "silent.mp4", frames, 16)
    with pytest.raises(MediaError, match="has no audio track"):
        generate_joint("a ball", settings, task="continue", video_path=silent)
    with pytest.raises(MediaError, match="longer than 2 s"):
        generate_joint("a ball", UISettings(steps=1, output_dir=tmp_path / "ui", max_joint_input=2.0), task="v2a",
                       video_path=clip)  # fmt: skip


def test_binaural_tab_spatialises_the_uploaded_audio(settings, tmp_path):
    frames = np.repeat(np.repeat(moving_square(t=16, h=16, w=32), 2, axis=1), 2, axis=2)
    mono = np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32) * 0.05
    clip = write_video(tmp_path / "in.mp4", frames, 16, audio=mono, sample_rate=16000)
    result = generate_binaural(clip, settings, mode="spatialise")
    audio, _ = read_audio(result.video)
    assert audio.shape[0] == 2 and "spatialise" in result.summary and result.extra_files[0].suffix == ".wav"
    silent = write_video(tmp_path / "silent.mp4", frames, 16)
    with pytest.raises(MediaError, match="no audio track") as err:
        generate_binaural(silent, settings, mode="spatialise")
    assert "\n" not in str(err.value)


def test_a_damaged_upload_s_skipped_packets_are_in_the_summary(settings, tmp_path):
    """The packets of an upload the muxer refuses (a broken capture's mangled AAC headers) are skipped and named in
    the result's summary, not a traceback after the work."""
    result = generate_binaural(damaged_ts(tmp_path / "capture.ts"), settings, mode="spatialise")
    assert result.video.is_file()
    assert "; 2 damaged packets of its aac audio track skipped (the muxer refused them" in result.summary


def test_uploads_and_missing_weights_are_one_line_errors(settings, tmp_path, monkeypatch):
    with pytest.raises(MediaError, match="upload a video first"):
        check_video_upload(None)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(MediaError, match="not a video file"):
        check_video_upload(text)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video")
    with pytest.raises(MediaError, match="not a readable video file"):
        check_video_upload(fake)
    with pytest.raises(MediaError, match=r"prores video cannot be copied unchanged into an \.mp4 file; convert"):
        check_video_upload(prores_mov(tmp_path / "edit.mov"))  # the page's result is an mp4: no .mov to suggest
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "empty_cache"))
    clip = write_video(tmp_path / "in.mp4", moving_square(t=16), 16)
    with pytest.raises(AvflowError, match=f"avflow download {services.FOLEY_MODEL}") as err:
        generate_foley(clip, "rain", settings)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("seed, message", [(None, "whole number, got None"), (2.5, "whole number, got 2.5"),
                                           (1e30, "an integer from -9223372036854775808")])  # fmt: skip
def test_a_seed_torch_cannot_take_is_a_one_line_error_before_any_model(settings, tmp_path, monkeypatch, seed, message):
    reads = WeightReads(monkeypatch)
    clip = write_video(tmp_path / "in.mp4", moving_square(t=16), 16)
    for run in (lambda: generate_joint("a ball", settings, seed=seed),
                lambda: generate_binaural(clip, settings, seed=seed),
                lambda: generate_foley(clip, "rain", settings, seed=seed)):  # fmt: skip
        with pytest.raises(AvflowError, match=message) as err:
            run()
        assert "\n" not in str(err.value)
    assert reads.calls == []


def test_the_tabs_run_models_of_one_s_own(tiny_model, tmp_path, monkeypatch):
    """`avflow ui --model FOLDER --foley-model CONFIG.json --foley-weights FILE`: the Generate tab samples the given
    joint model (not the shipped one), the Foley tab the given foley model with its network checkpoint, and the
    page's defaults and weights message are theirs."""
    import json

    import soundfile as sf
    import torch
    from helpers import fixtures_root, tiny_foley_raw_files, write_tiny_model_config

    mine = write_tiny_default_model(tmp_path / "mine", seed=7)  # another joint model than the "shipped" tiny one
    config = json.loads((mine / "config.json").read_text())
    config["sampling"]["cfg_strength"] = 1.5
    (mine / "config.json").write_text(json.dumps(config))
    folder = tmp_path / "foley"
    folder.mkdir()
    files, spec = tiny_foley_raw_files(folder, fixtures_root())
    foley_json = write_tiny_model_config(folder, files, spec)
    network = torch.load(folder / "tiny_net.pth", weights_only=True)
    torch.save({k: v * 1.5 for k, v in network.items()}, tmp_path / "finetune.pth")
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "empty_cache"))  # nothing from the weight cache is needed

    base = UISettings(output_dir=tmp_path / "out", steps=2)
    own = UISettings(output_dir=tmp_path / "out", steps=2, model=str(mine), foley_model=str(foley_json),
                     foley_weights=str(tmp_path / "finetune.pth"))  # fmt: skip
    assert services.joint_cfg_strength(own) == 1.5 != services.joint_cfg_strength(base)
    assert services.missing_foley_weights(own) == [] and "finetune.pth" in services.foley_weights_message(own)
    clips = [generate_joint("a red ball bounces", s, seed=1, duration=0.5).video for s in (base, own)]
    assert not np.array_equal(*(read_audio(c)[0].numpy() for c in clips))  # the other model sampled
    clip = write_video(tmp_path / "in.mp4", moving_square(t=24), 16)
    sounds = []
    for weights in (None, str(tmp_path / "finetune.pth")):
        settings = UISettings(output_dir=tmp_path / "out", steps=2, foley_model=str(foley_json), foley_weights=weights)
        result = generate_foley(clip, "rain", settings, seed=3)
        wav = next(f for f in result.extra_files if f.suffix == ".wav")
        sounds.append(sf.read(str(wav))[0])
    assert sounds[0].shape == sounds[1].shape and not np.array_equal(*sounds)  # the fine-tune's network, not the base
    assert sounds[0].shape[0] == round(1.5 * services._foley_spec(settings).network_config.sample_rate)  # all of it
    short = UISettings(output_dir=tmp_path / "out", steps=2, foley_model=str(foley_json), max_foley_duration=1.0)
    with pytest.raises(MediaError, match=r"in.mp4: 1.5 s is longer than 1 s"):  # refused, not cut to 1 s
        generate_foley(clip, "rain", short, seed=3)


def _clip(path, seconds: float = 1.0, audio: str = "noise"):
    """A 32x64 moving square at 16 fps with a 16 kHz mono track: noise, silence (zeros) or none."""
    t = max(1, round(seconds * 16))
    frames = np.repeat(np.repeat(moving_square(t=t, h=16, w=32), 2, axis=1), 2, axis=2)
    if audio == "none":
        return write_video(path, frames, 16)
    sound = np.random.default_rng(0).standard_normal((1, t * 1000)).astype(np.float32) * 0.05
    return write_video(path, frames, 16, audio=sound if audio == "noise" else sound * 0, sample_rate=16000)


def test_steps_have_one_range_for_the_sliders_the_cli_and_every_tab(settings, tmp_path, monkeypatch):
    """`avflow ui --steps 150` was accepted while the page's sliders ended at 100 (every tab then refused the page's
    own value) and the Generate tab took up to 200: one range, STEPS_RANGE, for all of them; out of it, one line."""
    import argparse

    from avflow.commands import ui as ui_command

    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "empty_cache"))  # no foley weights: refused before the model
    low, high = services.STEPS_RANGE
    clip = _clip(tmp_path / "in.mp4")
    for run in (lambda steps: generate_joint("a ball", settings, duration=0.5, steps=steps),
                lambda steps: generate_foley(clip, "rain", settings, steps=steps),
                lambda steps: generate_binaural(clip, settings, mode="spatialise", steps=steps)):  # fmt: skip
        for steps in (low - 1, high + 1):
            with pytest.raises(AvflowError, match=f"^steps must be between {low} and {high}, not {steps}$"):
                run(steps)
    parser = argparse.ArgumentParser()
    ui_command.add_arguments(parser)
    out = ["--output-dir", str(tmp_path / "out")]
    ui_command.check_arguments(parser.parse_args(["--steps", str(high), *out]))
    with pytest.raises(AvflowError, match=f"^--steps must be from {low} to {high} .*, got {high + 1}$"):
        ui_command.check_arguments(parser.parse_args(["--steps", str(high + 1), *out]))
    for hours in ("0", "-1", "nan", "inf"):
        with pytest.raises(AvflowError, match="^--keep-hours must be a number of hours above 0"):
            ui_command.check_arguments(parser.parse_args(["--keep-hours", hours, *out]))


def test_the_page_s_sliders_start_at_any_steps_the_server_takes(tmp_path, monkeypatch):
    """The sliders end where STEPS_RANGE ends (so `--steps` at its top is the page's own value), and the Binaural tab
    offers no binaural model where none is installed; gradio keeps its copies of results as long as the job folders."""
    pytest.importorskip("gradio")
    from avflow.ui.app import BINAURAL_MODES, build_app

    monkeypatch.setattr(binaural_model, "MODEL_FILE", tmp_path / "none.safetensors")  # as shipped: no model
    low, high = services.STEPS_RANGE
    demo = build_app(UISettings(steps=high, output_dir=tmp_path / "ui", keep_hours=2.0))
    props = [c.get("props", {}) for c in demo.get_config_file()["components"]]
    sliders = [p for p in props if p.get("label") == "steps"]
    assert len(sliders) == 3 and all((p["minimum"], p["maximum"], p["value"]) == (low, high, high) for p in sliders)
    (how,) = [p for p in props if p.get("label") == "how"]
    assert [choice[1] for choice in how["choices"]] == ["auto", "spatialise the video's own audio"]
    assert services.binaural_modes() == ["auto", "spatialise"] and set(BINAURAL_MODES.values()) >= {"model"}
    assert demo.delete_cache == (3600, 7200)


def test_a_cancelled_request_stops_at_its_next_step_and_leaves_no_job_folder(tmp_path, monkeypatch):
    """A closed tab's request ran to its end (blocking the queue behind it) and wrote its outputs: its progress callback
    (`cancellable`) now raises `Cancelled` at the next sampling step, and nothing is left in the output folder."""
    settings = UISettings(steps=4, output_dir=tmp_path / "ui")
    gone, heard = threading.Event(), []

    def progress(done: int, total: int) -> None:
        heard.append((done, total))
        gone.set()  # the page went away during the first step

    with pytest.raises(services.Cancelled):
        generate_joint("a ball", settings, duration=0.5, progress=services.cancellable(progress, gone.is_set))
    assert heard == [(1, 4)] and not list(settings.output_dir.glob("*"))
    with pytest.raises(services.Cancelled):  # binaural: said after its track, before anything is written
        generate_binaural(_clip(tmp_path / "in.mp4"), settings, mode="spatialise",
                          progress=services.cancellable(None, gone.is_set))  # fmt: skip
    assert not list(settings.output_dir.glob("*"))

    def full_disk(media, out):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(services, "_spectrogram_of", full_disk)  # fails after its job folder was made
    with pytest.raises(OSError, match="No space left"):
        generate_binaural(_clip(tmp_path / "in.mp4"), settings, mode="spatialise")
    assert not list(settings.output_dir.glob("*"))


def test_messages_and_notes_name_uploads_not_the_server_s_folders(settings, tmp_path, monkeypatch):
    """Errors showed gradio's upload path (/tmp/gradio/<hash>/oneframe.mp4: video is too short) and the install path
    of the missing binaural model: now the upload's own name, and that no binaural model is installed here."""
    upload = tmp_path / "gradio" / "0f3c9a7e5b"
    upload.mkdir(parents=True)
    short = _clip(upload / "oneframe.mp4", seconds=0.25)
    for run in (lambda: generate_foley(short, "rain", settings),
                lambda: generate_binaural(short, settings, mode="spatialise"),
                lambda: generate_joint("a ball", settings, task="v2a", video_path=short)):  # fmt: skip
        with pytest.raises(MediaError, match=r"^oneframe.mp4: video is too short \(0.250 s\)") as err:
            run()
        assert str(tmp_path) not in str(err.value)
    monkeypatch.setattr(binaural_model, "MODEL_FILE", tmp_path / "assets" / "binaural" / "model.safetensors")
    assert "model" not in services.binaural_modes()
    with pytest.raises(AvflowError, match="^no binaural model is installed on this server: choose auto or spatialise"):
        generate_binaural(_clip(tmp_path / "in.mp4"), settings, mode="model")
    text = "/usr/lib/python3/avflow/x.pth and " + str(services.Path(services.avflow.__file__).parent / "a" / "b.bin")
    assert services.public_text(text, settings=settings) == "/usr/lib/python3/avflow/x.pth and b.bin"


def test_notes_raised_while_a_tab_runs_end_its_summary(settings, tmp_path):
    """The Binaural tab said nothing of a silent result (its note went to the server's log only): each note raised
    while a tab runs (avflow's `Note` warnings) ends that tab's summary, every time, naming the upload only."""
    upload = tmp_path / "gradio" / "77aa01"
    upload.mkdir(parents=True)
    quiet = _clip(upload / "quiet.mp4", audio="silence")
    for _ in range(2):  # not only the first time at that place
        summary = generate_binaural(quiet, settings, mode="spatialise").summary
        assert summary.endswith("\n\nNote: quiet.mp4: its own audio is silent (peak below -90 dBFS), and so is its "
                                "binaural track")  # fmt: skip
    longer = upload / "longer.mov"  # a recording stopped late on one stream: 2.5 s of audio, 2 s of video
    with av.open(str(longer), "w") as out:
        video = out.add_stream("libx264", rate=16)
        video.width, video.height, video.pix_fmt = 64, 32, "yuv420p"
        track = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        for frame in np.repeat(np.repeat(moving_square(t=32, h=16, w=32), 2, axis=1), 2, axis=2):
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode(None))
        sound = (np.random.default_rng(0).standard_normal((1, 40000)) * 1000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(sound, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        out.mux([*track.encode(frame), *track.encode(None)])
    summary = generate_joint("a ball", settings, task="continue", video_path=longer, duration=0.5).summary
    assert "\n\nNote: longer.mov: its audio runs 0.50 s past its video's end" in summary
    assert str(tmp_path) not in summary


def test_job_folders_older_than_keep_hours_are_removed(tmp_path):
    """Results piled up for ever: a job folder last written more than `keep_hours` ago is removed when a new result
    is made (and when the server starts); a folder not named as a job's (the user's own, in --output-dir) is kept."""
    out = tmp_path / "ui"
    settings = UISettings(steps=1, output_dir=out, keep_hours=2.0)
    old, recent, mine = out / "0123456789ab", out / "ba9876543210", out / "my_notes"
    for folder in (old, recent, mine):
        folder.mkdir(parents=True)
        (folder / "x.txt").write_text("x")
    three_hours_ago = time.time() - 3 * 3600
    for folder in (old, mine):
        os.utime(folder, (three_hours_ago, three_hours_ago))
    result = generate_binaural(_clip(tmp_path / "in.mp4"), settings, mode="spatialise")
    assert result.video.is_file() and result.video.parent.parent == out
    assert not old.exists() and recent.is_dir() and mine.is_dir()
    assert services.remove_old_jobs(settings) == []  # nothing else is old yet
    later = services.remove_old_jobs(settings, now=time.time() + 3 * 3600)  # three hours on
    assert sorted(later) == sorted([recent, result.video.parent]) and not recent.exists() and mine.is_dir()


def test_an_upload_the_task_does_not_use_is_refused(settings, tmp_path):
    """A video uploaded while the task was t2av (or a file in the box the chosen task does not read) was ignored
    without a word: refused in one line that says what to do."""
    clip = _clip(tmp_path / "in.mp4")
    wav = write_audio(tmp_path / "sound.wav", np.zeros((1, 16000), dtype=np.float32), 16000)
    cases = [("t2av", {"video_path": clip}, "t2av does not use the uploaded video in.mp4: remove it from the video "
                                            "box, or choose the task v2a or continue"),
             ("t2av", {"audio_path": wav}, "t2av does not use the uploaded sound sound.wav: remove it from the sound "
                                           "box, or choose the task a2v"),
             ("a2v", {"audio_path": wav, "video_path": clip}, "a2v does not use the uploaded video in.mp4"),
             ("v2a", {"audio_path": wav, "video_path": clip}, "v2a does not use the uploaded sound sound.wav"),
             ("continue", {"audio_path": wav, "video_path": clip}, "continue does not use the uploaded sound"),
             ]  # fmt: skip
    for task, uploads, message in cases:
        with pytest.raises(MediaError, match=f"^{message}") as err:
            generate_joint("a ball", settings, task=task, duration=0.5, **uploads)
        assert "\n" not in str(err.value)
    assert not list(settings.output_dir.glob("*"))


@pytest.mark.parametrize("given", [["replace"], None, 3])
def test_existing_audio_that_is_not_a_name_is_a_one_line_error(tmp_path, given):
    # before: a list (unhashable) raised a TypeError from the set lookup instead of the service's own error
    with pytest.raises(AvflowError, match="existing audio must be one of"):
        services.check_existing_audio(tmp_path / "clip.mp4", given)
