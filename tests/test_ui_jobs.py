"""The web UI's jobs side by side and their files: two jobs on one shared model take turns (the waiting one says so),
a full disk is one line naming the result, only avflow's own job folder is served, results carry the upload's name,
and steps that are not whole are refused."""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers import moving_square, write_tiny_default_model

from avflow.data.media import write_video
from avflow.errors import AvflowError, MediaError
from avflow.ui import services
from avflow.ui.services import UISettings, generate_binaural, generate_foley, generate_joint


@pytest.fixture(scope="module")
def tiny_foley(tmp_path_factory):
    """A model config .json of a tiny random foley model (its files beside it)."""
    from helpers import fixtures_root, tiny_foley_raw_files, write_tiny_model_config

    folder = tmp_path_factory.mktemp("tiny_foley")
    files, spec = tiny_foley_raw_files(folder, fixtures_root())
    return str(write_tiny_model_config(folder, files, spec))


@pytest.fixture(scope="module")
def tiny_joint(tmp_path_factory):
    return str(write_tiny_default_model(tmp_path_factory.mktemp("tiny_joint")))


def _clip(path, seconds: float, audio: bool = True):
    """A 32x64 moving square at 16 fps, with a 16 kHz noise track unless `audio` is False."""
    t = round(seconds * 16)
    frames = np.repeat(np.repeat(moving_square(t=t, h=16, w=32), 2, axis=1), 2, axis=2)
    if not audio:
        return write_video(path, frames, 16)
    sound = np.random.default_rng(0).standard_normal((1, t * 1000)).astype(np.float32) * 0.05
    return write_video(path, frames, 16, audio=sound, sample_rate=16000)


def test_two_foley_jobs_at_once_take_turns_on_the_shared_model(tiny_foley, tmp_path, monkeypatch):
    """Two Foley jobs at once: one failed with "MMAudio expects 208 latents for this duration, got 94" (the other had
    set the shared network to its own clip length mid-run). The second now waits for its turn, says so through its
    progress (`services.WAITING`), and both finish, each as long as its own clip."""
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "empty_cache"))
    settings = UISettings(output_dir=tmp_path / "ui", steps=2, foley_model=tiny_foley)
    pipeline = services.foley_pipeline(settings)
    net = pipeline.model.network
    first_set, second_went_on = threading.Event(), threading.Event()
    real_set_duration = net.set_duration

    def set_duration(seconds):
        (first_set if threading.current_thread().name == "first" else second_went_on).set()
        return real_set_duration(seconds)

    monkeypatch.setattr(net, "set_duration", set_duration)
    heard: dict[str, list] = {"first": [], "second": []}
    results, errors = {}, {}

    def progress(name):
        def report(done, total):
            heard[name].append((done, total))
            if name == "second" and (done, total) == (0, 0):  # services.WAITING
                second_went_on.set()  # waiting for its turn: it will not touch the network now
            if name == "first" and first_set.is_set() and total:  # the first is sampling: let the second go on
                second_went_on.wait(10)

        return report

    def job(name, clip):
        try:
            results[name] = generate_foley(clip, "rain", settings, seed=1, progress=progress(name))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors[name] = exc

    clips = {"first": _clip(tmp_path / "long.mp4", 1.0), "second": _clip(tmp_path / "short.mp4", 0.75)}
    first = threading.Thread(target=job, args=("first", clips["first"]), name="first")
    first.start()
    assert first_set.wait(30), "the first job never sampled"
    second = threading.Thread(target=job, args=("second", clips["second"]), name="second")
    second.start()
    for thread in (first, second):
        thread.join(60)
    assert errors == {}, errors
    rate = pipeline.sample_rate
    for name, seconds in (("first", 1.0), ("second", 0.75)):
        wav = next(f for f in results[name].extra_files if f.suffix == ".wav")
        assert sf.info(str(wav)).frames == round(seconds * rate)
    assert services.WAITING == (0, 0) and (0, 0) in heard["second"] and (0, 0) not in heard["first"]


def test_generate_jobs_take_turns_on_the_shared_joint_model(tiny_joint, tmp_path):
    """The Generate tab's model is shared as the Foley tab's is (its text encoder's tokenizer is not thread-safe, and
    its sampling holds the shared weights cast for the run): a job waits while another has it, and says so."""
    settings = UISettings(output_dir=tmp_path / "ui", steps=1, model=tiny_joint)
    model = services.joint_model(settings)
    heard, results, asked = [], [], threading.Event()

    def report(done, total):
        heard.append((done, total))
        asked.set()

    waiting = threading.Thread(target=lambda: results.append(
        generate_joint("a ball", settings, duration=0.5, progress=report)))  # fmt: skip
    with services.model_turn(model, None):  # another request has the model
        waiting.start()
        assert asked.wait(30)
        time.sleep(0.2)
        assert set(heard) == {(0, 0)}  # waiting for its turn, nothing sampled yet
    waiting.join(60)
    assert results and results[0].video.is_file() and heard[-1] == (1, 1)


class _FullDisk:
    """A file whose writes fail as a full disk's do once `room` bytes are written (reads, seeks: the file's own)."""

    def __init__(self, file, room: int) -> None:
        self._file, self._room = file, room

    def write(self, data) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def _full_disk(monkeypatch, out, room: int) -> None:
    """`out`, written atomically (`avflow.weights.atomic_write`, as every mp4 is), fails at `room` bytes."""
    import builtins

    from avflow import weights

    def opened(path, mode="r", *args, **kwargs):
        file = builtins.open(path, mode, *args, **kwargs)
        return _FullDisk(file, room) if Path(path).name.startswith(f".{out.name}.tmp") else file

    monkeypatch.setattr(weights, "open", opened, raising=False)


@pytest.mark.parametrize("room", [0, 2000])  # at the header, in the packets
def test_a_full_disk_is_one_line_naming_the_output(tmp_path, monkeypatch, room):
    """A disk full while the result was written: the page showed "PyAVCallbackError: [Errno 1447131472] Error in
    PyAV callback: '.foley.mp4.tmp3914'", the CLI a traceback; now a MediaError naming the output and the reason, and
    nothing is left behind."""
    from avflow.data.media import mux_audio

    clip, out = _clip(tmp_path / "in.mp4", 1.0), tmp_path / "out" / "result.mp4"
    _full_disk(monkeypatch, out, room)
    with pytest.raises(MediaError, match=f"^no space left on device writing {out}$"):
        mux_audio(clip, np.zeros((1, 16000), np.float32), 16000, out)
    with pytest.raises(MediaError, match=f"^no space left on device writing {out}$"):
        write_video(out, moving_square(t=16), 16)
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_one_line_in_the_cli(tiny_foley, tmp_path, monkeypatch, capsys):
    """`avflow foley` on a full disk: one line, `avflow foley: error: no space left on device writing OUT`."""
    from avflow.cli import main

    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "empty_cache"))
    clip, out = _clip(tmp_path / "in.mp4", 0.75), tmp_path / "out.mp4"
    _full_disk(monkeypatch, out, 0)
    assert main(["foley", str(clip), "--model", tiny_foley, "--steps", "1", "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"avflow foley: error: no space left on device writing {out}"
    )
    assert not out.exists()


def test_results_are_named_after_the_upload(tmp_path):
    """Every download was foley.mp4, binaural.mp4, generated.mp4: now the upload's name (made safe) and what was done,
    a prompt's first words for a clip made from text; job folders stay as they were."""
    assert services.safe_stem("/tmp/gradio/ab12/my holiday (1).MP4", "video") == "my_holiday_1"
    assert services.safe_stem("Łódź-trip.v2.mov", "video") == "Łódź-trip.v2"
    assert services.safe_stem("...", "video") == services.safe_stem(None, "video") == "video"
    assert len(services.safe_stem("x" * 300 + ".mp4", "video")) == services.RESULT_STEM_CHARS
    assert services.prompt_stem("A red ball bounces on a wooden floor!") == "a_red_ball_bounces_on"
    assert services.prompt_stem("...") == "generated"
    settings = UISettings(steps=1, output_dir=tmp_path / "ui")
    result = generate_binaural(_clip(tmp_path / "my holiday.mp4", 1.0), settings, mode="spatialise")
    assert [p.name for p in (result.video, *result.extra_files, result.spectrogram)] == [
        "my_holiday_binaural.mp4", "my_holiday_binaural.wav", "my_holiday_binaural_spectrogram.png"]  # fmt: skip
    assert services.JOB_NAME.fullmatch(result.video.parent.name) and result.video.parent.parent == settings.output_dir


@pytest.mark.parametrize(("steps", "message"), [
    (2.7, "steps must be a whole number between 1 and 200, not 2.7"),
    (float("nan"), "steps must be a whole number between 1 and 200, not nan"),
    (1e30, "steps must be between 1 and 200, not 1e+30"),
    ("many", "steps (a whole number between 1 and 200) must be a number, not 'many'"),
])  # fmt: skip
def test_steps_that_are_not_whole_are_refused(tmp_path, steps, message):
    """The API's steps 2.7 ran 2 steps without a word: refused in one line, as are numbers out of range."""
    settings = UISettings(output_dir=tmp_path / "ui")
    with pytest.raises(AvflowError, match=f"^{re.escape(message)}$"):
        generate_binaural(_clip(tmp_path / "in.mp4", 1.0), settings, mode="spatialise", steps=steps)
    assert services.check_steps(3.0) == 3 and services.check_steps(None) is None
    with pytest.raises(AvflowError, match=r"^cfg_strength must be at most 10, not 1e\+30$"):
        services.check_cfg_strength(1e30)


@pytest.fixture
def served(tiny_foley, tiny_joint, tmp_path, monkeypatch):
    """`avflow ui --output-dir OUT` (`app.launch`) on a free port, not blocking: (url, OUT, the settings it serves)."""
    pytest.importorskip("gradio")
    import socket

    from avflow.ui import app

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "cache"))
    built, real_build = [], app.build_app

    def build(settings):
        demo = real_build(settings)
        launch = demo.launch
        demo.launch = lambda **options: launch(**options, prevent_thread_lock=True)
        built.append((demo, settings))
        return demo

    monkeypatch.setattr(app, "build_app", build)
    out = tmp_path / "out"
    own_old, old_job = out / "0123456789ab", out / app.JOBS_FOLDER / "0123456789ab"  # the user's; a job of yesterday
    for folder in (own_old, old_job):
        folder.mkdir(parents=True)
        os.utime(folder, (time.time() - 48 * 3600,) * 2)
    (out / "secret.txt").write_text("secret")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = UISettings(steps=1, output_dir=out, model=tiny_joint, foley_model=tiny_foley)
    app.launch(settings, port=port)
    demo, serving = built[0]
    try:
        assert own_old.is_dir() and not old_job.exists()  # started: yesterday's job removed, nothing else
        yield f"http://127.0.0.1:{port}/", out, serving
    finally:
        demo.close()


def test_only_avflow_s_own_job_folder_is_served(served, tmp_path):
    """Every file under --output-dir could be downloaded (`/gradio_api/file=OUT/secret.txt`: 200): results now go to
    OUT/avflow-ui-jobs, the only folder of it served and cleaned up; they are named after the upload."""
    import httpx
    from gradio_client import Client, handle_file

    from avflow.ui.app import JOBS_FOLDER

    url, out, serving = served
    assert serving.output_dir == out / JOBS_FOLDER
    assert httpx.get(f"{url}gradio_api/file={out / 'secret.txt'}").status_code == 403  # the user's own file
    client = Client(url, verbose=False, download_files=str(tmp_path / "dl"))
    video, *_ = client.predict(handle_file(str(_clip(tmp_path / "my holiday.mp4", 1.0))), "auto", 0, 1, "keep",
                               api_name="/binaural")  # fmt: skip
    assert Path(video["video"] if isinstance(video, dict) else video).name == "my_holiday_binaural.mp4"
    (job,) = (out / JOBS_FOLDER).iterdir()
    assert (job / "my_holiday_binaural.mp4").is_file()
    answer = httpx.get(f"{url}gradio_api/file={job / 'my_holiday_binaural.wav'}")
    assert answer.status_code == 200 and 'filename="my_holiday_binaural.wav"' in answer.headers["content-disposition"]


def test_upload_and_number_errors_are_avflow_s_own_and_stay(served, tmp_path):
    """gradio's own input errors (a file type its box did not list; steps 1e30 over the slider's maximum) vanished
    after 10 s and named no file: the tab's own checks now say it, naming the upload, in a line that stays."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(served[0], verbose=False, download_files=str(tmp_path / "dl"))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    clip = handle_file(str(_clip(tmp_path / "in.mp4", 1.0)))
    cases = [((handle_file(str(notes)), "auto", 0, 1, "keep"), "/binaural",
              f"notes.txt: not a video file (accepted: {', '.join(services.VIDEO_TYPES)})"),
             ((clip, "auto", 0, 1e30, "keep"), "/binaural", "steps must be between 1 and 200, not 1e+30"),
             ((clip, "", "", 0, 2.7, 4.5, "keep"), "/foley", "steps must be a whole number between 1 and 200, not 2.7"),
             ((clip, "", "", 0, 2, 50.0, "keep"), "/foley", "cfg_strength must be at most 10, not 50"),
             (("a ball", 0, 99.0, 1, 3.5, "t2av", None, None, "keep"), "/joint",
              "duration must be between 0.5 and 10.0 s, not 99.0")]  # fmt: skip
    for args, api, message in cases:
        with pytest.raises(AppError) as err:
            client.predict(*args, api_name=api)
        assert (err.value.message, err.value.duration) == (message, None)
