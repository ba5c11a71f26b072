"""`avflow eval` on user folders (audit of 2026-12-07): bad ground-truth values skip their clip, same-stem files
are each measured, the report's timeline names are unique, short and URL-quoted and a failed report leaves the JSON
and no half-made folder, the report shows the reference set's measures, the Fréchet video features do not depend on
the frame rate, unreadable references are listed, and audio-only containers, silent videos and links are handled
the same way everywhere."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from avflow.cli import main as cli_main
from avflow.errors import MediaError
from avflow.eval import distribution, report
from avflow.eval.synthetic import flash_clip

SR = 16000


def _video(path: Path, seed: int = 0, audio: bool = True) -> Path:
    """A tiny flash-and-click clip (2 s, 32 px, 25 fps) as a video file; ``audio=False``: no audio stream."""
    from avflow.data.media import write_video

    clip = flash_clip(seed, duration=2.0, n_events=2, size=32)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, clip.frames, clip.fps, clip.audio if audio else None, SR)


def _wav(path: Path, seed: int = 0, channels: int = 2) -> Path:
    """One second of clicks (an audio-only clip, quick to measure)."""
    from avflow.data.media import write_audio

    audio = 0.01 * np.random.default_rng(seed).standard_normal((channels, SR))
    for k in (3000 + 100 * seed, 9000, 13000):
        audio[:, k : k + 200] += np.exp(-np.arange(200) / 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_audio(path, audio.astype(np.float32), SR)


def _audio_only_container(path: Path) -> Path:
    """A video container (by suffix) holding one AAC audio stream and no video."""
    import av

    audio = np.ascontiguousarray(flash_clip(1, duration=2.0, n_events=2, size=32).audio, dtype=np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=SR, layout="stereo")
        frame = av.AudioFrame.from_ndarray(audio, format="fltp", layout="stereo")
        frame.sample_rate = SR
        for packet in (*stream.encode(frame), *stream.encode(None)):
            out.mux(packet)
    return path


# --- 1: ground truth with bad values -------------------------------------------------------------------------------

BAD_TRUTH = [
    {"offset_ms": "abc"},
    {"offset_ms": None},
    {"offset_ms": True},  # was read as 1 ms
    {"events": [{"time": "nan"}]},
    {"events": [{"time": float("inf")}]},  # json.dumps writes Infinity, as 1e999 reads
    {"events": [{"time": 0.5, "azimuth": "left"}]},
    {"events": [0.5, 1.3]},
    {"events": 3},
]


def test_bad_ground_truth_values_skip_the_clip_with_the_json_named(tmp_path, capsys):
    video = _video(tmp_path / "one" / "c.mp4")
    for truth in BAD_TRUTH:
        video.with_suffix(".json").write_text(json.dumps(truth))
        with pytest.raises(MediaError) as info:
            report.load_eval_clip(video)
        assert str(video.with_suffix(".json")) in str(info.value) and "\n" not in str(info.value), truth
    video.with_suffix(".json").write_text(json.dumps({"offset_ms": -20, "events": [{"time": 0.5, "azimuth": None}]}))
    assert report.load_eval_clip(video).meta["offset_ms"] == -20
    folder = tmp_path / "clips"  # a whole run: the bad clip skipped, the good one measured (it ended with exit 1)
    _video(folder / "good.mp4")
    shutil.copy(video, folder / "bad.mp4")
    (folder / "bad.json").write_text('{"offset_ms": "abc"}')
    out = tmp_path / "res.json"
    assert cli_main(["eval", str(folder), "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert list(result["clips"]) == ["good"]
    assert "bad.json: offset_ms must be a finite number" in result["skipped"]["bad"]


# --- 2: same stem, several files -----------------------------------------------------------------------------------


def test_files_sharing_a_stem_are_each_measured_and_a_wav_still_pairs_with_a_single_video(tmp_path):
    folder, ref = tmp_path / "clips", tmp_path / "ref"
    first = _video(folder / "a.mp4")
    for suffix in (".mov", ".mkv"):
        shutil.copy(first, folder / f"a{suffix}")  # FFmpeg reads the content, whatever the suffix
    _video(folder / "b.mp4", seed=1)
    _wav(folder / "b.wav", channels=1)  # b's sound (mono): the documented pairing
    _wav(ref / "a.wav")
    result = report.evaluate(folder, ref)
    assert sorted(result["clips"]) == ["a.mkv", "a.mov", "a.mp4", "b"], result["skipped"]
    assert result["sources"] == {k: str(folder / k) for k in ("a.mkv", "a.mov", "a.mp4")} | {"b": str(folder / "b.mp4")}
    assert result["references"] == {k: str(ref / "a.wav") for k in ("a.mkv", "a.mov", "a.mp4")}  # by stem
    assert report.load_eval_clip(folder / "b.mp4").audio.shape[0] == 1  # the wav, not the video's stereo track
    _wav(folder / "a.wav", channels=1)  # beside several videos: a clip of its own, each video keeps its track
    again = report.find_clips(folder)
    assert sorted(again) == ["a.mkv", "a.mov", "a.mp4", "a.wav", "b"]
    assert report.load_eval_clip(folder / "a.mp4").audio.shape[0] == 2


# --- 3, 4: report names, order of writing, no half-made report, stale timelines ------------------------------------


def _named_clips(folder: Path) -> list[str]:
    """Audio-only clips whose ids collided as timeline names, were too long for one, or need URL quoting."""
    long_dir = "d" * 200
    names = ["sub/x", "sub__x", "clip#1", "50% done?", "a&b 'c'", "Upper", f"{long_dir}/{'n' * 100}"]
    for k, name in enumerate(names):
        _wav(folder / f"{name}.wav", seed=k)
    return names


def test_report_timelines_are_unique_short_and_url_quoted(tmp_path):
    folder, out = tmp_path / "clips", tmp_path / "report"
    names = _named_clips(folder)
    assert cli_main(["eval", str(folder), "--report", str(out), "--quiet"]) == 0
    page = (out / "index.html").read_text()
    sources = re.findall(r"<img src='([^']*)'", page)
    assert len(sources) == len(names) == len(set(sources)) == len(list((out / "timelines").iterdir()))
    for src in sources:
        assert re.fullmatch(r"[A-Za-z0-9._~/%-]+", src), src  # nothing a browser reads as '#', '?' or '%xx'
        assert (out / unquote(src)).is_file() and len(Path(src).name) <= 68, src


def test_the_json_comes_first_and_a_failed_report_leaves_no_folder(tmp_path, monkeypatch, capsys):
    from avflow.eval import html

    folder, out, res = tmp_path / "clips", tmp_path / "report", tmp_path / "res.json"
    _named_clips(folder)
    drawn = []

    def failing(title, details):
        if drawn:
            raise OSError(36, "File name too long")
        drawn.append(title)
        return html.Image.new("RGB", (4, 4))

    monkeypatch.setattr(html, "draw_timeline", failing)
    assert cli_main(["eval", str(folder), "--json", str(res), "--report", str(out), "--quiet"]) != 0
    assert json.loads(res.read_text())["n_clips"] == 7 and not out.exists()
    assert "File name too long" in capsys.readouterr().err


def test_an_overwritten_report_keeps_no_stale_timeline(tmp_path):
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "report"
    for name in ("x", "y", "deep/z"):
        _wav(first / f"{name}.wav")
    _wav(second / "w.wav")
    assert cli_main(["eval", str(first), "--report", str(out), "--quiet"]) == 0
    assert len(list((out / "timelines").iterdir())) == 3
    assert cli_main(["eval", str(second), "--report", str(out), "--quiet", "-y"]) == 0
    assert [p.name for p in (out / "timelines").iterdir()] == ["w.png"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no work folder left


# --- 5: the reference set in the report ----------------------------------------------------------------------------


def test_the_report_shows_the_reference_folder_pairs_and_frechet_distances(tmp_path, monkeypatch):
    from avflow.eval.html import write_report

    folder, ref = tmp_path / "clips", tmp_path / "ref"
    for k in range(3):
        _wav(folder / f"c{k}.wav", seed=k)
        _wav(ref / f"c{k + 1}.wav", seed=k + 5)
    monkeypatch.setattr(report, "FD_DIM", 2)  # 3 clips a side: defined
    result = report.evaluate(folder, ref, keep_details=True)
    assert result["n_paired"] == 2 and list(result["unpaired"]) == ["c0"]
    page = write_report(result, tmp_path / "report").read_text()
    assert f"{ref}: 2 of 3 clips paired" in page and "Clips without a reference" in page and "c0" in page
    assert f"{result['distribution']['fd_audio']:.3g}" in page and "3 vs 3 clips" in page
    assert "only values from sets of the same sizes compare" in page


# --- 6: Fréchet video features whatever the frame rate --------------------------------------------------------------


def _moving(seed: int, fps: float, duration: float = 2.0, size: int = 32) -> np.ndarray:
    """A square moving at a seeded speed and three 0.1 s flashes, drawn at the frame times of ``fps``."""
    rng = np.random.default_rng(seed)
    speed, y0, level = rng.uniform(5, 40), int(rng.integers(4, 24)), int(rng.integers(20, 80))
    flashes = np.sort(rng.uniform(0.1, duration - 0.3, 3))
    times = np.arange(int(round(duration * fps))) / fps
    frames = np.full((len(times), size, size, 3), level, np.uint8)
    for k, t in enumerate(times):
        x = int(2 + speed * t) % (size - 6)
        frames[k, y0 : y0 + 6, x : x + 6] = 220
        if any(f <= t < f + 0.1 for f in flashes):
            frames[k, :8, :8] = 255
    return frames


def test_the_same_clips_at_15_and_30_fps_are_near_in_fd_video():
    """Motion was the per-frame difference: the same clips at 15 and at 30 fps scored fd_video 0.34 apart (on the
    audit's clips; here 40 times the distance between two sets of different clips at one rate)."""
    embed = distribution.StatsEmbedder("video")
    silence = np.zeros((1, SR), np.float32)

    def embed_set(seeds, fps):
        return np.stack([embed(silence, SR, _moving(s, fps), fps) for s in seeds])

    at15, at30, other30 = embed_set(range(20), 15.0), embed_set(range(20), 30.0), embed_set(range(100, 120), 30.0)
    same = distribution.frechet_distance(at15, at30)
    different = distribution.frechet_distance(at30, other30)
    assert same < 0.25 * different, (same, different)


# --- 7: unreadable references ----------------------------------------------------------------------------------------


def test_an_unreadable_reference_is_listed_and_its_prediction_still_measured(tmp_path, capsys):
    folder, ref, res = tmp_path / "clips", tmp_path / "ref", tmp_path / "res.json"
    for k in range(2):
        _wav(folder / f"c{k}.wav", seed=k)
    _wav(ref / "c0.wav")
    (ref / "c1.wav").write_bytes(b"not a sound")
    (ref / "extra.wav").write_bytes(b"nor this")  # a reference without a prediction: dropped silently before
    assert cli_main(["eval", str(folder), "--ref", str(ref), "--json", str(res), "--quiet"]) == 0
    result = json.loads(res.read_text())
    assert sorted(result["clips"]) == ["c0", "c1"] and result["n_paired"] == 1
    assert sorted(result["ref_skipped"]) == ["c1", "extra"] and result["n_ref_skipped"] == 2
    assert "n_onsets" in result["clips"]["c1"]  # its own measures stay
    why = result["undefined"]["c1"]["snr_db"]
    assert why.startswith("its reference is unreadable") and str(ref / "c1.wav") in why
    printed = capsys.readouterr().out
    assert "skipped 2 reference clip(s)" in printed and "2 reference clips unreadable" in printed


# --- 8: audio-only containers, silent videos, links ------------------------------------------------------------------


def test_an_audio_only_video_container_is_measured_as_audio_and_a_silent_video_said_once(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    _audio_only_container(folder / "song.mp4")
    _audio_only_container(folder / "song2.mkv")
    _video(folder / "silent.mp4", audio=False)
    result = report.evaluate(folder)
    assert sorted(result["clips"]) == ["song", "song2"], result["skipped"]
    why = result["skipped"]["silent"]
    assert why.count(str(folder / "silent.mp4")) == 1 and "no audio stream" in why


def test_linked_folders_are_followed_once_and_broken_links_listed(tmp_path):
    root, elsewhere = tmp_path / "clips", tmp_path / "elsewhere"
    _wav(root / "real" / "a.wav")
    _wav(elsewhere / "b.wav", seed=1)
    os.symlink(elsewhere, root / "linked")
    os.symlink(root, root / "real" / "up")  # a loop: each real folder is read once
    os.symlink(tmp_path / "missing.wav", root / "broken.wav")
    os.symlink(elsewhere / "b.wav", root / "file_link.wav")
    result = report.evaluate(root)
    assert sorted(result["clips"]) == ["file_link", "linked/b", "real/a"], result["clips"]
    assert list(result["skipped"]) == ["broken"] and "broken link" in result["skipped"]["broken"]
