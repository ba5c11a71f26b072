"""A generated clip (video frames + stereo audio): writing it, its spectrogram and its model-free metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avflow.eval.measure import Measure


@dataclass(frozen=True, kw_only=True)
class GeneratedClip:
    frames: Tensor  # (T, H, W, 3) uint8
    audio: Tensor  # (2, N) float32 [left, right]
    sample_rate: int
    fps: float
    prompt: str

    @property
    def duration(self) -> float:
        return self.frames.shape[0] / self.fps

    def save(self, path: str | Path) -> Path:
        """An mp4 with h264 video and a stereo AAC track of the video's duration."""
        from avflow.data.media import write_video

        return write_video(path, self.frames, self.fps, self.audio, self.sample_rate)

    def log_mel(self) -> np.ndarray:
        """(80, F) log10 mel of the left + right mix (MMAudio 16 kHz front end; audio resampled if needed)."""
        from avflow.codecs.mel import MEL_16K, MelSpectrogram
        from avflow.data.audio import resample

        mono = self.audio.float().mean(0, keepdim=True).numpy()  # (1, N)
        if self.sample_rate != MEL_16K.sample_rate:
            mono = resample(mono, self.sample_rate, MEL_16K.sample_rate)
        with torch.no_grad():
            return MelSpectrogram(MEL_16K)(torch.from_numpy(np.ascontiguousarray(mono)))[0].numpy()

    def save_spectrogram(self, path: str | Path, scale: int = 3) -> Path:
        """The log-mel as a PNG (low frequencies at the bottom, 50 dB of range, `avflow.data.spectrogram`'s colours)."""
        from avflow.data.spectrogram import image, save_png

        mel = self.log_mel()[::-1]  # (80, F), high frequencies first (top row)
        lo, hi = float(mel.max()) - 5.0, float(mel.max())  # 50 dB of range
        x = np.clip((mel - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        return save_png([image(x, mel.shape[1] * scale, mel.shape[0] * scale)], path)

    def metrics(self) -> dict[str, Measure]:
        """Model-free checks against what is visible in the generated frames (see `clip_av_metrics`): each a value or
        the reason it has none (a blank video has no score)."""
        from avflow.eval.clip_metrics import clip_av_metrics

        return clip_av_metrics(self.audio.numpy(), self.sample_rate, self.frames.numpy(), self.fps)
