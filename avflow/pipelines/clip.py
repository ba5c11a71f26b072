"""A generated clip (video frames + stereo audio): writing it, its spectrogram and its model-free measures.

`GeneratedClip.metrics()` returns named `avflow.eval.measure.Measure`s (`avflow.eval.clip_metrics.clip_av_metrics`):
a value where the clip defines it, else none and the reason (never a bare NaN; a blank video has no score).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from avflow.eval.measure import Measure


@dataclass(frozen=True, kw_only=True)
class GeneratedClip:
    frames: Tensor  # (T, H, W, 3) uint8
    audio: Tensor  # (2, N) float32 [left, right]; N / sample_rate is the clip's exact length
    sample_rate: int
    fps: float
    prompt: str
    task: str = "t2av"
    windows: int = 1  # generation windows of the model's trained length

    @property
    def duration(self) -> float:
        """Seconds of audio: exactly the asked or given length (the frames cover it, to the next whole frame)."""
        return self.audio.shape[1] / self.sample_rate

    def save(self, path: str | Path) -> Path:
        """An mp4 with h264 video and a stereo AAC track of the video's duration."""
        from avflow.data.media import write_video

        return write_video(path, self.frames, self.fps, self.audio, self.sample_rate)

    def save_spectrogram(self, path: str | Path) -> Path:
        """Left and right spectrograms with time and frequency axes on a fixed dBFS scale (`data/spectrogram.py`)."""
        from avflow.data.spectrogram import save_spectrogram

        return save_spectrogram(self.audio.numpy(), path, self.sample_rate, names=("left", "right"))

    def metrics(self, written: str | Path | None = None) -> dict[str, Measure]:
        """Model-free checks against what is visible in the generated frames (see `clip_av_metrics`): each a value or
        the reason it has none (a blank video has no score). With ``written``, the file `save` wrote, they are those
        of the clip as written — its H.264 frames and AAC sound decoded, as `avflow eval` reads the file — which can
        differ from the frames before encoding (4:2:0 chroma and quantisation change a 64 px clip's small objects)."""
        from avflow.eval.clip_metrics import clip_av_metrics

        if written is None:
            return clip_av_metrics(self.audio.numpy(), self.sample_rate, self.frames.numpy(), self.fps)
        from avflow.eval.report import load_eval_clip

        clip = load_eval_clip(Path(written))
        return clip_av_metrics(clip.audio, clip.sample_rate, clip.frames, clip.fps)
