"""Spectrogram images (numpy + Pillow only): one colour map and one PNG writer for every spectrogram avflow draws
(a media file's or an array's STFT here, the log-mel of a generated clip in `avflow.pipelines.clip`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from avflow.data.audio import read_audio
from avflow.weights import atomic_write


def log_spectrogram(mono: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """(freq, frames) dB magnitudes of a mono signal, low frequencies last row first."""
    if mono.size < n_fft:
        mono = np.pad(mono, (0, n_fft - mono.size))
    n_frames = 1 + (mono.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]  # (frames, n_fft)
    frames = mono[index] * np.hanning(n_fft)[None, :]
    magnitude = np.abs(np.fft.rfft(frames, axis=-1)).T  # (freq, frames)
    return 20.0 * np.log10(magnitude + 1e-6)


def colour(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 on a dark-blue -> yellow ramp."""
    stops = np.array([[0, 0, 4], [60, 15, 110], [180, 55, 90], [250, 150, 40], [252, 255, 164]], dtype=np.float64)
    position = values * (len(stops) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(stops) - 2)
    frac = (position - low)[..., None]
    return (stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)


def image(values: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W) values in [0, 1], top row first -> (height, width, 3) uint8 coloured and resized (bilinear)."""
    return np.asarray(Image.fromarray(colour(values)).resize((width, height), Image.BILINEAR))


def save_png(panels: list[np.ndarray], path: str | Path) -> Path:
    """Stack (h, w, 3) uint8 panels top to bottom into one PNG (written atomically)."""
    path = Path(path)
    picture = Image.fromarray(np.concatenate(panels, axis=0))
    atomic_write(path, lambda f: picture.save(f, format="PNG"))
    return path


def save_spectrogram(audio: np.ndarray, path: str | Path, *, height: int = 160, width: int = 640) -> Path:
    """Write one spectrogram panel per channel of `audio` (C, N) (or (N,)), stacked, 80 dB range."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    panels = []
    for channel in audio:
        db = log_spectrogram(channel)[::-1]  # high frequencies on top
        panels.append(image(np.clip((db - (db.max() - 80.0)) / 80.0, 0.0, 1.0), width, height))
    return save_png(panels, path)


def save_file_spectrogram(media_path: str | Path, png_path: str | Path) -> Path:
    """The spectrogram of a media file's audio track."""
    audio, _ = read_audio(media_path)
    return save_spectrogram(audio.numpy(), png_path)
