"""The web UI's inputs as an API client sends them (an HTTP audit drove the page): every tab's own check answers in one
line (a duration or seed that is not a number, a seed that is not whole, a choice the page does not offer) where
gradio's checks rounded a seed silently or answered in a multi-line message with a traceback; the Generate tab says
what its model made other than asked; `launch` leaves a working folder that holds gradio's upload folder. The pages
are built but not served: `submit` does what gradio does with a request's inputs (each component's `preprocess`,
then the tab's handler)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import moving_square, write_tiny_default_model

from avflow.data.media import write_video
from avflow.errors import AvflowError
from avflow.models import binaural as binaural_model
from avflow.ui.services import JOINT_TASKS, UISettings, generate_joint


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(write_tiny_default_model(tmp_path_factory.mktemp("tiny_joint")))


@pytest.fixture
def settings(tiny_model, tmp_path) -> UISettings:
    return UISettings(steps=1, output_dir=tmp_path / "ui", model=tiny_model)


@pytest.fixture(scope="module")
def demo(tiny_model, tmp_path_factory):
    """The page (built once: gradio's import takes seconds), serving the tiny joint model."""
    pytest.importorskip("gradio")
    from avflow.ui.app import build_app

    return build_app(UISettings(steps=1, output_dir=tmp_path_factory.mktemp("ui"), model=tiny_model))


def submit(demo, api_name: str, *payloads) -> str:
    """What the page shows for a request of `api_name` with `payloads` (as an API client sends them; an upload as a
    path): each input through its component's `preprocess`, then the tab's handler; its error's one line."""
    import gradio as gr

    (fn,) = [f for f in demo.fns.values() if f"/{f.api_name}" == api_name]
    values = [p if isinstance(c, gr.File) else c.preprocess(p) for c, p in zip(fn.inputs, payloads, strict=True)]
    request = SimpleNamespace(session_hash="test")
    with pytest.raises(gr.Error) as err:
        asyncio.run(fn.fn(*values, request=request, progress=lambda *args, **kwargs: None))
    return err.value.message


def test_a_duration_that_is_not_a_number_is_one_line(settings):
    """'abc' gave `ValueError: could not convert string to float` and a traceback in the server's log."""
    with pytest.raises(AvflowError, match=r"^duration \(s\) must be a number, not 'abc'$"):
        generate_joint("a ball", settings, duration="abc")
    with pytest.raises(AvflowError, match=r"^duration must be between 0\.5 and 10\.0 s, not nan$"):
        generate_joint("a ball", settings, duration=float("nan"))


@pytest.mark.parametrize("seed", [2.7, "abc", "7", float("nan")])
def test_every_tab_s_seed_is_checked_by_the_tab(demo, seed):
    """gr.Number(precision=0) made 2.7 a 3 (the same output as seed 3), and 'abc', '7' or NaN gave gradio's
    "Could not preprocess input component at index 3..." with a traceback: the tab's seed check now answers."""
    message = f"seed must be a whole number, got {seed!r}"
    requests = {"/joint": ("a ball", seed, 1.0, 1, 3.5, "t2av", None, None, "keep"),
                "/foley": (None, "", "", seed, 1, 4.5, "keep"),
                "/binaural": (None, "auto", seed, 1, "keep")}  # fmt: skip
    for api_name, payloads in requests.items():
        assert submit(demo, api_name, *payloads) == message, api_name


def test_every_tab_s_choices_are_checked_by_the_tab(demo, tmp_path, monkeypatch):
    """A choice the page does not offer gave gradio's raw "Value: ... is not in the list of choices" with a traceback,
    and the Binaural tab's "binaural model" where none is installed never reached the tab's message that says so
    (an unknown "how" was taken as auto)."""
    monkeypatch.setattr(binaural_model, "MODEL_FILE", tmp_path / "none.safetensors")  # as shipped: no model
    keep = "the video's own audio must be one of keep, replace, mix, not 'KEEP'"
    cases = [("/joint", ("a ball", 0, 1.0, 1, 3.5, "bogus", None, None, "keep"),
              f"unknown task 'bogus' (choose from {', '.join(JOINT_TASKS)})"),
             ("/joint", ("a ball", 0, 1.0, 1, 3.5, ["t2av"], None, None, "keep"),
              f"unknown task ['t2av'] (choose from {', '.join(JOINT_TASKS)})"),
             ("/joint", ("a ball", 0, 1.0, 1, 3.5, "t2av", None, None, "KEEP"), keep),
             ("/foley", (None, "", "", 0, 1, 4.5, "KEEP"), keep),
             ("/binaural", (None, "auto", 0, 1, "KEEP"), keep),
             ("/binaural", (None, "bogus", 0, 1, "keep"),
              "how must be one of auto, binaural model, spatialise the video's own audio, not 'bogus'"),
             ("/binaural", (None, "binaural model", 0, 1, "keep"),
              "no binaural model is installed on this server: choose auto or spatialise (the video's own audio, "
              "placed where things move)")]  # fmt: skip
    for api_name, payloads, message in cases:
        assert submit(demo, api_name, *payloads) == message, (api_name, payloads)


def test_the_summary_says_a_length_off_the_model_s_frame_grid(settings):
    """1.03 s gave a 1 s clip (0.55 s one of 0.5625 s) without a word."""
    snapped = generate_joint("a ball", settings, duration=1.03)
    assert snapped.summary.startswith("t2av, 1.00 s; 1.03 s rounded to 1 s at 16 fps. ")
    assert "rounded" not in generate_joint("a ball", settings, duration=1.0).summary


def test_the_summary_says_a_continued_clip_is_re_rendered(settings, tmp_path):
    """A continued 160x96 clip at 30 fps came back at the model's 32x32, 16 fps, the summary saying only
    "continue, 1.56 s"."""
    sound = np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32) * 0.05
    big = np.repeat(np.repeat(moving_square(t=30, h=16, w=32), 6, axis=1), 5, axis=2)  # 96x160
    clip = write_video(tmp_path / "clip.mp4", big, 30, audio=sound, sample_rate=16000)
    longer = generate_joint("a ball", settings, task="continue", video_path=clip, duration=0.55)
    said = "continue, 1.56 s; your clip is re-rendered at the model's 32x32, 16 fps; 0.55 s added rounded to 0.5625 s"
    assert longer.summary.startswith(said + " at 16 fps. ")


def test_launch_leaves_a_working_folder_that_holds_gradio_s_uploads(tmp_path, monkeypatch):
    """An upload named '.holiday.mp4' failed with gradio's "Dotfiles located in the temporary directory cannot be
    moved to the cache..." where gradio's upload folder lay inside the server's working folder (GRADIO_TEMP_DIR=
    $PWD/g, `cd /tmp && avflow ui`): the server now works in its output folder, every path it was given made absolute
    first."""
    from avflow.ui import app

    launched = []

    def build(settings):  # the page as launched: the working folder, gradio's upload folder and the settings
        return SimpleNamespace(launch=lambda **_: launched.append((Path.cwd(), os.environ["GRADIO_TEMP_DIR"],
                                                                   settings)))  # fmt: skip

    monkeypatch.setattr(app, "build_app", build)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADIO_TEMP_DIR", "g")  # relative: gradio's uploads in ./g
    given = UISettings(output_dir=Path("out"), model="runs/joint", foley_model="my/foley.json", foley_weights="w.pt")
    app.launch(given)
    cwd, uploads, settings = launched[-1]
    assert cwd == tmp_path / "out" / app.JOBS_FOLDER == settings.output_dir and uploads == str(tmp_path / "g")
    assert (settings.model, settings.foley_model, settings.foley_weights) == (
        str(tmp_path / "runs/joint"), str(tmp_path / "my/foley.json"), str(tmp_path / "w.pt"))  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # gradio's uploads outside the working folder: it stays; names and URLs unchanged
    app.launch(UISettings(output_dir=tmp_path / "o", foley_weights="hf://org/repo/w.safetensors"))
    cwd, _, settings = launched[-1]
    assert cwd == elsewhere and (settings.model, settings.foley_model) == (None, "small_16k")
    assert settings.foley_weights == "hf://org/repo/w.safetensors"
