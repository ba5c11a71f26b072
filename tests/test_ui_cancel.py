"""`avflow ui`'s page through gradio itself (in this process, on a free localhost port), the Generate tab's sampling
stood in for by a loop of short sleeps where the prompt is "slow" or "fast": a request whose client went away stops at
its next step and frees its slot, and leaves no job folder; an error stays in the page until closed and names an
upload by its own name; the steps sliders take the whole STEPS_RANGE. Skips without gradio."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import moving_square, write_tiny_default_model

from avflow.data.media import write_video
from avflow.ui import services
from avflow.ui.services import Result, UISettings

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

STEP_S = 0.2  # each step of a "slow" request


def _clip(path, seconds: float = 1.0):
    t = max(1, round(seconds * 16))
    sound = np.random.default_rng(0).standard_normal((1, t * 1000)).astype(np.float32) * 0.05
    return write_video(path, moving_square(t=t), 16, audio=sound, sample_rate=16000)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The app on a free port, one request at a time; `runs[seed]`: (steps done, how the stand-in's run ended)."""
    from avflow.ui import app

    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("AVFLOW_HOME", str(tmp_path / "cache"))
    settings = UISettings(steps=2, concurrency=1, output_dir=tmp_path / "ui",
                          model=str(write_tiny_default_model(tmp_path / "tiny")))  # fmt: skip
    runs: dict[int, tuple[int, str]] = {}
    started = threading.Event()
    real = app.generate_joint

    def joint(prompt, settings, *, seed=0, steps=None, progress=None, **options):
        if prompt not in ("slow", "fast"):
            return real(prompt, settings, seed=seed, steps=steps, progress=progress, **options)
        done = 0
        try:
            for done in range(1, int(steps) + 1):
                started.set()
                time.sleep(STEP_S if prompt == "slow" else 0)
                progress(done, int(steps))
        except BaseException as exc:
            runs[seed] = (done, type(exc).__name__)
            raise
        runs[seed] = (done, "finished")
        out = services._job_dir(settings)
        video = _clip(out / "generated.mp4")
        return Result(video, services._spectrogram_of(video, out), f"seed {seed}")

    monkeypatch.setattr(app, "generate_joint", joint)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.build_app(settings)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                allowed_paths=[str(settings.output_dir)])  # fmt: skip
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", runs=runs, started=started, settings=settings)
    finally:
        demo.close()


def _joint(client, prompt, seed, steps, video=None):
    """The Generate tab's API: prompt, seed, duration, steps, cfg_strength, task, sound, video, the video's audio."""
    return client.predict(prompt, seed, 1.0, steps, 3.5, "t2av", None, video, "keep", api_name="/joint")


def test_a_request_whose_client_went_away_stops_at_its_next_step_and_frees_its_slot(server, tmp_path):
    """A closed tab's (here: a killed client's) request ran to its end, the next one waiting behind it, and wrote its
    outputs: it now stops at its next step, leaves no job folder, and the next request gets the slot."""
    from gradio_client import Client

    code = (f"from gradio_client import Client; c = Client({server.url!r}, verbose=False); "
            f"c.predict('slow', 1, 1.0, 100, 3.5, 't2av', None, None, 'keep', api_name='/joint')")  # fmt: skip
    abandoned = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert server.started.wait(120), "the abandoned request never started"
        time.sleep(3 * STEP_S)
    finally:
        abandoned.kill()
        abandoned.wait()
    client = Client(server.url, verbose=False, download_files=str(tmp_path / "dl"))
    start = time.monotonic()
    *_, summary = _joint(client, "fast", 2, 3)
    assert summary == "seed 2" and server.runs[2] == (3, "finished")
    done, how = server.runs[1]
    assert how == "Cancelled" and done < 100, server.runs  # not its 100 steps (20 s)
    assert time.monotonic() - start < 60
    assert len(list(server.settings.output_dir.iterdir())) == 1  # the second request's job folder only


def test_a_request_its_client_cancels_stops_at_its_next_step(server, tmp_path):
    """An API client's `Job.cancel()` (gradio cancels the event's task; its worker thread went on to the end): the
    request stops at its next step, and the next one runs."""
    from gradio_client import Client

    client = Client(server.url, verbose=False, download_files=str(tmp_path / "dl"))
    job = client.submit("slow", 1, 1.0, 100, 3.5, "t2av", None, None, "keep", api_name="/joint")
    assert server.started.wait(120), "the request never started"
    time.sleep(3 * STEP_S)
    job.cancel()
    *_, summary = _joint(Client(server.url, verbose=False, download_files=str(tmp_path / "dl2")), "fast", 2, 3)
    assert summary == "seed 2"
    done, how = server.runs.get(1, (None, "still running"))  # gradio freed the slot, the thread went on
    assert how == "Cancelled" and done < 100, server.runs
    assert len(list(server.settings.output_dir.iterdir())) == 1


def test_an_error_stays_until_closed_and_names_the_upload_only(server, tmp_path):
    """Error toasts vanished after 10 s (leaving "Error"), and named the server's upload folder: now they stay, and
    name the uploaded file; an upload the task does not read is refused, not ignored."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False, download_files=str(tmp_path / "dl"))
    clip = _clip(tmp_path / "myclip.mp4")
    with pytest.raises(AppError) as err:
        _joint(client, "a ball", 0, 2, video=handle_file(str(clip)))
    assert err.value.message == ("t2av does not use the uploaded video myclip.mp4: remove it from the video box, or "
                                 "choose the task v2a or continue")  # fmt: skip
    assert err.value.duration is None
    short = _clip(tmp_path / "oneframe.mp4", seconds=0.25)
    with pytest.raises(AppError) as err:
        client.predict("a ball", 0, 1.0, 2, 3.5, "v2a", None, handle_file(str(short)), "keep", api_name="/joint")
    assert err.value.message.startswith("oneframe.mp4: video is too short") and err.value.duration is None


def test_the_steps_sliders_take_the_whole_range(server, tmp_path):
    """`avflow ui --steps 150` made every tab refuse the page's own value (the sliders ended at 100)."""
    from gradio_client import Client

    high = services.STEPS_RANGE[1]
    client = Client(server.url, verbose=False, download_files=str(tmp_path / "dl"))
    *_, summary = _joint(client, "fast", 3, high)
    assert summary == "seed 3" and server.runs[3] == (high, "finished")
