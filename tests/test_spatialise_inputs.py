"""`spatialise` and `amplitude_pan` check their inputs first, in one line each: float frames in [0, 1] were read as
black (nothing tracked, the sound centred), a negative fps swapped the sides, frames for half of the sound were taken,
and fps 0, sample_rate 0 or 16, channels-first or zero frames failed deep inside (ZeroDivisionError, IndexError, a
reshape error, 'slice step cannot be zero')."""

from __future__ import annotations

import numpy as np
import pytest

from avflow.errors import MediaError
from avflow.pipelines import spatialise as sp

SR, FPS = 16000, 16.0
FRAMES = np.zeros((16, 16, 32, 3), np.uint8)  # 1 s
MONO = (np.random.default_rng(0).standard_normal(SR) * 0.1).astype(np.float32)  # 1 s

BAD = {
    "frames in [0, 1]": (dict(frames=FRAMES.astype(np.float32) / 255),
                         "frames: expected uint8 frames 0-255, got float32"),
    "channels first": (dict(frames=FRAMES.transpose(0, 3, 1, 2)), "channels first? pass frames.transpose(0, 2, 3, 1)"),
    "grey frames": (dict(frames=FRAMES[..., 0]), "frames: expected (T, H, W, 3) frames, got shape (16, 16, 32)"),
    "no frames": (dict(frames=FRAMES[:0]), "frames: expected at least one frame, got shape (0, 16, 32, 3)"),
    "fps 0": (dict(fps=0.0), "fps must be a finite number > 0, got 0.0"),
    "fps negative": (dict(fps=-16.0), "fps must be a finite number > 0, got -16.0"),
    "fps nan": (dict(fps=float("nan")), "fps must be a finite number > 0"),
    "sample_rate 0": (dict(sample_rate=0), "sample_rate must be a whole number of Hz >= 1000"),
    "sample_rate in kHz": (dict(sample_rate=16), "(16 kHz is 16000), got 16"),
    "sample_rate not whole": (dict(sample_rate=16000.5), "sample_rate must be a whole number of Hz"),
    "frames for half the sound": (dict(frames=FRAMES[:8]), "the frames last 0.5 s (8 at 16 fps) and the sound 1 s"),
    "a sound of 2 s for 1 s of frames": (dict(mono=np.concatenate([MONO, MONO])), "and the sound 2 s"),
}


@pytest.mark.parametrize("render", [sp.spatialise, sp.amplitude_pan], ids=["spatialise", "amplitude_pan"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_are_one_line_errors_before_any_work(case, render, monkeypatch):
    def tracked(frames):
        raise AssertionError("tracked before the inputs were checked")

    monkeypatch.setattr(sp, "object_centers", tracked)
    given, message = BAD[case]
    args = dict(mono=MONO, sample_rate=SR, frames=FRAMES, fps=FPS) | given
    with pytest.raises(MediaError) as err:
        render(args["mono"], args["sample_rate"], args["frames"], args["fps"])
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_frames_within_one_frame_of_the_sound_or_past_its_end_are_taken():
    """Frames short of the sound by less than a frame (a video's last frame ends where the sound does) and frames
    past its end (a sound for the video's first seconds: `avflow foley --duration` on a longer video)."""
    for frames in (FRAMES[:15], np.concatenate([FRAMES, FRAMES])):
        for render in (sp.spatialise, sp.amplitude_pan):
            out = render(MONO, SR, frames, FPS)
            assert out.shape == (2, SR) and np.isfinite(out).all()
    assert sp.spatialise(MONO, np.int64(SR), FRAMES, 16).shape == (2, SR)  # numpy and whole numbers are numbers
