"""Metric inputs: a wrong layout, dtype or length is a one-line error, and a cue with nothing to measure is NaN (or an
undefined measure with its reason), never a plausible number."""

from __future__ import annotations

import numpy as np
import pytest

from avflow.eval import spatial, sync
from avflow.eval.clip import measure_clip
from avflow.eval.events import is_blank
from avflow.eval.onsets import audio_onsets
from avflow.eval.synthetic import bouncing_clip
from avflow.eval.video_quality import frame_psnr

SR = 16000


def _noise(n: int = SR, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal((2, n))  # (2, n)


def _one_line_error(fn, match: str) -> str:
    with pytest.raises(ValueError, match=match) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    return message


# --- spatial: paired lengths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric",
    [
        spatial.snr,
        spatial.stft_distance,
        spatial.envelope_distance,
        spatial.magnitude_distance,
        spatial.phase_distance,
        spatial.ipd_error,
    ],
)
def test_a_short_prediction_is_not_scored_on_the_overlap(metric):
    x = _noise()
    message = _one_line_error(lambda: metric(x[:, : SR // 10], x), "one shape")
    assert "(2, 1600)" in message and "(2, 16000)" in message
    _one_line_error(lambda: metric(x[:1], x), r"\(2, N\)")  # a channel missing


def test_samples_first_audio_names_the_transpose():
    x = _noise()
    assert "audio.T" in _one_line_error(lambda: spatial.ild(x.T), r"\(16000, 2\)")


# --- spatial: nothing to measure -> NaN ----------------------------------------------------------------------------


def test_silence_and_a_silent_ear_have_no_cues():
    x = _noise()
    silence = np.zeros((2, SR))
    left_only = np.stack([x[0], np.zeros(SR)])
    assert np.isnan(spatial.ild(silence)) and np.isnan(spatial.ild(left_only))
    assert np.isnan(spatial.itd_gcc_phat(silence, SR)) and np.isnan(spatial.itd_gcc_phat(left_only, SR))
    assert np.isnan(spatial.delta_itd(silence, np.stack([x[0], x[0]]), SR))
    assert np.isnan(spatial.delta_ild(left_only, x))
    assert np.isnan(spatial.ipd_error(x, silence)) and np.isnan(spatial.ipd_error(x, left_only))
    assert np.isnan(spatial.snr(silence, silence)) and np.isnan(spatial.snr(x, silence))
    assert spatial.snr(silence, x) == pytest.approx(0.0, abs=1e-9)  # a silent prediction is scored: 0 dB
    assert np.isfinite([spatial.ild(x), spatial.itd_gcc_phat(x, SR), spatial.ipd_error(0.9 * x, x)]).all()


def test_the_report_says_why_a_cue_is_undefined_and_cuts_only_codec_framing():
    from avflow.eval.report import EvalClip, clip_measures

    x = _noise(2 * SR)
    silent = clip_measures(EvalClip("s", np.zeros((2, 2 * SR), np.float32), SR, None, 0.0)).measures
    assert not silent["ild_db"].defined and "silent" in silent["ild_db"].reason
    assert not silent["itd_us"].defined and "silent" in silent["itd_us"].reason
    ref = EvalClip("r", x.astype(np.float32), SR, None, 0.0)
    close = clip_measures(EvalClip("p", x[:, : 2 * SR - 300].astype(np.float32), SR, None, 0.0), ref).measures
    assert close["snr_db"].value > 90 and close["stft_dist"].value < 1e-3  # the common part: identical
    short = clip_measures(EvalClip("p", x[:, : SR // 5].astype(np.float32), SR, None, 0.0), ref).measures
    for k in ("snr_db", "stft_dist", "ipd_error_rad", "delta_ild_db"):
        assert not short[k].defined and "differ in length" in short[k].reason, k


# --- one shared input check for the clip entry points --------------------------------------------------------------


@pytest.fixture(scope="module")
def clip():
    return bouncing_clip(0)


def test_measure_clip_refuses_wrong_layouts_dtypes_and_nan(clip):
    a, f, sr, fps = clip.audio, clip.frames, clip.sample_rate, clip.fps
    assert "audio.T" in _one_line_error(lambda: measure_clip(a.T, sr, f, fps), "channels first")
    assert "multiply by 255" in _one_line_error(
        lambda: measure_clip(a, sr, f.astype(np.float32) / 255, fps), "uint8"
    )  # was "blank video"
    _one_line_error(lambda: measure_clip(a * np.nan, sr, f, fps), "finite")  # was "silent audio"
    _one_line_error(lambda: measure_clip((a * 32767).astype(np.int16), sr, f, fps), "float")
    assert "transpose" in _one_line_error(lambda: measure_clip(a, sr, f.transpose(0, 3, 1, 2), fps), r"\(T, H, W, 3\)")
    assert measure_clip(a, sr, f, fps).sync_offset_ms.defined  # the right layout still scores
    assert measure_clip(a.mean(0), sr, f, fps).sync_offset_ms.defined  # (N,) mono stays documented


def test_onsets_refuse_samples_first_audio_instead_of_finding_none():
    click = np.zeros(SR)
    click[[4000, 8000, 12000]] = 1.0
    stereo = np.stack([click, click])  # (2, N)
    assert len(sync.detect_onsets(stereo, SR)) == 3
    _one_line_error(lambda: sync.detect_onsets(stereo.T, SR), "audio.T")
    _one_line_error(lambda: sync.detect_onsets(click * np.nan, SR), "finite")
    _one_line_error(lambda: audio_onsets(stereo.T, SR), "audio.T")
    assert len(audio_onsets(stereo, SR)) == 3 and len(audio_onsets(click, SR)) == 3


def test_float_frames_are_not_a_blank_video_nor_a_high_psnr():
    frames = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    _one_line_error(lambda: is_blank(frames / 255.0), "uint8")
    assert not is_blank(frames) and is_blank(np.full_like(frames, 128))
    scaled = frames.astype(np.float32) / 127.5 - 1
    assert "add 1" in _one_line_error(lambda: frame_psnr(scaled, scaled + 0.5), "uint8")  # read 54 dB before
    message = _one_line_error(lambda: frame_psnr(frames, frames[:2]), "one shape")
    assert "(4, 16, 16, 3)" in message and "(2, 16, 16, 3)" in message
    assert frame_psnr(frames, frames // 2 * 2).shape == (4,)
