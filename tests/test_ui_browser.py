"""`avflow ui` in a real browser: Debian's headless Chromium driven by Playwright against a server on localhost.

The server runs the real (shipped, v2) default model with few steps ($AVFLOW_UI_TEST_STEPS, default 2); while the
shipped model is still v1 the tests skip. Where Chromium, gradio or playwright is missing the tests skip with the
reason, except under CI=true, where they fail. Screenshots of each tab are written to outputs/ui_screenshots/.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from avflow.data.media import probe

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "outputs" / "ui_screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
STEPS = os.environ.get("AVFLOW_UI_TEST_STEPS", "2")
MAX_FILE_SIZE = "1mb"
GENERATE_TIMEOUT_MS = 240_000
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def _require_browser_stack() -> None:
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append("Chromium (apt-get install chromium)")
    for module, extra in (("gradio", "the [ui] extra"), ("playwright", "playwright (pip install playwright)")):
        if importlib.util.find_spec(module) is None:
            missing.append(extra)
    if missing:
        message = f"browser UI test needs {', '.join(missing)}; `make ui-deps` installs them"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """URL of an `avflow ui` server on a free localhost port (real default model, few steps)."""
    from helpers import shipped_default_model_is_v2

    if not shipped_default_model_is_v2():
        pytest.skip("the shipped default model is still v1: runs once the v2 weights are in "
                    "avflow/assets/default_model")  # fmt: skip
    _require_browser_stack()
    tmp = tmp_path_factory.mktemp("ui")
    port = _free_port()
    env = {**os.environ, "AVFLOW_HOME": str(tmp / "cache"), "AVFLOW_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [sys.executable, "-m", "avflow.cli", "ui", "--port", str(port), "--steps", STEPS]
    command += ["--max-file-size", MAX_FILE_SIZE, "--concurrency", "2", "--output-dir", str(tmp / "out")]
    log = open(tmp / "server.log", "w+")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"`avflow ui` exited with {process.returncode}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("`avflow ui` did not answer within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(server)
    page.wait_for_selector("#joint-generate", timeout=60_000)
    yield page
    context.close()


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _fetch(url: str, dest: Path) -> Path:
    with urllib.request.urlopen(url, timeout=60) as response:
        dest.write_bytes(response.read())
    return dest


def _check_clip(path: Path) -> None:
    info = probe(path)
    assert info.has_video and info.has_audio, f"{path}: video {info.has_video}, audio {info.has_audio}"
    assert info.duration > 0 and info.n_frames > 0


PLAY_MUTED = """async (video) => {
    if (video.readyState < 1) await new Promise((ok) => video.addEventListener('loadedmetadata', ok, {once: true}));
    video.muted = true;
    await video.play().catch(() => {});
    await new Promise((ok) => setTimeout(ok, 1500));
    video.pause();
    return {
        duration: video.duration,
        decoded: video.webkitAudioDecodedByteCount ?? 0,
        tracks: video.audioTracks ? video.audioTracks.length : 0,
        moz: video.mozHasAudio ?? false,
        src: video.currentSrc,
    };
}"""


def test_each_tab_renders_and_is_screenshotted(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, probe_id in (("Generate", "#joint-generate"), ("Foley", "#foley-generate"), ("Binaural", "#bin-video")):
        _open_tab(page, name)
        page.wait_for_selector(probe_id, state="visible", timeout=10_000)
        shot = SCREENSHOTS / f"{name.lower()}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000
    # the cache is empty in this test: the foley tab says how to get the official weights
    _open_tab(page, "Foley")
    assert "avflow download small_16k" in page.inner_text("#foley-weights")


def test_joint_tab_generates_a_video_with_sound(page, tmp_path):
    _open_tab(page, "Generate")
    page.fill("#joint-prompt textarea", "a blue cube falls on a metal floor")
    page.click("#joint-generate")
    video = page.wait_for_selector("#joint-video video[src]", timeout=GENERATE_TIMEOUT_MS)
    state = video.evaluate(PLAY_MUTED)
    assert state["duration"] > 0, state
    assert state["decoded"] > 0 or state["tracks"] > 0 or state["moz"], f"the browser found no audio track: {state}"
    page.wait_for_selector("#joint-spectrogram img[src]", timeout=10_000)
    links = page.locator("#joint-files a[href]")
    assert links.count() >= 1
    _check_clip(_fetch(state["src"], tmp_path / "from_video.mp4"))
    _check_clip(_fetch(links.first.get_attribute("href"), tmp_path / "download.mp4"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "generate_result.png"), full_page=True)


def test_uploads_that_are_too_large_or_not_video_show_an_error(page, tmp_path):
    _open_tab(page, "Foley")
    upload = "#foley-video input[type=file]"
    oversized = tmp_path / "big.mp4"
    oversized.write_bytes(np.random.default_rng(0).integers(0, 255, 2 * 1024 * 1024, dtype=np.uint8).tobytes())
    page.set_input_files(upload, str(oversized))
    page.get_by_text("exceed", exact=False).first.wait_for(timeout=20_000)

    page.reload()
    page.wait_for_selector("#joint-generate", timeout=60_000)
    _open_tab(page, "Foley")
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are my notes, not a video\n" * 20)
    page.set_input_files(upload, str(fake))
    page.wait_for_selector("#foley-video a, #foley-video .file-preview", timeout=20_000)
    page.click("#foley-generate")
    page.get_by_text("notes.mp4: not a readable video file").first.wait_for(timeout=20_000)

    page.reload()
    page.wait_for_selector("#joint-generate", timeout=60_000)
    _open_tab(page, "Foley")
    text = tmp_path / "notes.txt"
    text.write_text("not a video either\n")
    page.set_input_files(upload, str(text))
    page.wait_for_selector("#foley-video a, #foley-video .file-preview", timeout=20_000)
    page.click("#foley-generate")  # avflow refuses it, naming the file (not gradio's fleeting "Invalid file type")
    page.get_by_text("notes.txt: not a video file", exact=False).first.wait_for(timeout=20_000)
    assert "Traceback" not in page.content()


def _moving_square_clip(path: Path, seconds: float = 1.0, fps: int = 16, rate: int = 16000) -> Path:
    """A square crossing from left to right, clicking every 0.25 s."""
    from avflow.data.media import write_video

    frames = np.zeros((int(seconds * fps), 64, 64, 3), dtype=np.uint8)
    for k in range(frames.shape[0]):
        x = 4 + k * 52 // frames.shape[0]
        frames[k, 24:36, x : x + 8] = 255
    audio = np.zeros((1, int(seconds * rate)), dtype=np.float32)
    for t in np.arange(0.1, seconds, 0.25):
        start = int(t * rate)
        audio[0, start : start + 400] = 0.5 * np.exp(-np.arange(400) / 80) * np.sin(np.arange(400) * 0.6)
    return write_video(path, frames, fps, audio, rate)


def test_binaural_tab_spatialises_an_uploaded_video(page, tmp_path):
    _open_tab(page, "Binaural")
    clip = _moving_square_clip(tmp_path / "square.mp4")
    page.set_input_files("#bin-video input[type=file]", str(clip))
    page.wait_for_selector("#bin-video a, #bin-video .file-preview", timeout=20_000)
    page.get_by_label("spatialise the video's own audio").check()
    page.click("#binaural-generate")
    video = page.wait_for_selector("#binaural-video video[src]", timeout=GENERATE_TIMEOUT_MS)
    result = probe(_fetch(video.get_attribute("src"), tmp_path / "binaural.mp4"))
    assert result.has_audio and result.audio_channels == 2
    assert abs(result.duration - probe(clip).duration) < 0.1


def test_two_requests_at_once_both_complete(server, tmp_path):
    _require_browser_stack()
    from gradio_client import Client

    def one(seed: int) -> Path:
        client = Client(server, verbose=False, download_files=str(tmp_path / f"client{seed}"))
        video, spectrogram, files, _ = client.predict(
            "two balls collide", seed, 1.0, int(STEPS), 3.0, "t2av", None, None, "keep", api_name="/joint"
        )  # prompt, seed, duration, steps, cfg_strength, task, sound, video, the video's own audio
        assert Path(spectrogram).is_file()
        return Path(video["video"] if isinstance(video, dict) else video)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, (1, 2)))
    for path in results:
        _check_clip(path)
    assert results[0].read_bytes() != results[1].read_bytes()  # different seeds, different clips
