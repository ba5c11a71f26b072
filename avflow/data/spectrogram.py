"""Spectrogram pictures (numpy + Pillow only): one panel per channel with a time axis (s), a frequency axis (kHz) and
a colour bar on a fixed dBFS scale, so pictures of different clips compare (a full-scale sine peaks at 0 dB; a quiet
clip looks dark instead of being stretched to full contrast). Used for generated clips (`avflow.pipelines.clip`) and
for media files (the web UI)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from avflow.data.audio import read_audio
from avflow.weights import atomic_write

DB_RANGE = (-80.0, 0.0)  # dBFS drawn from the darkest to the brightest colour; outside it, clipped
PLOT_SIZE = (640, 160)  # (width, height) of one channel's plot in pixels
MARGIN = {"left": 56, "top": 16, "bottom": 20, "right": 76}  # axes labels around the plot; the colour bar on the right


def log_spectrogram(mono: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """(freq, frames) STFT magnitudes in dBFS (Hann window; a full-scale sine gives 0 dB), low frequencies first."""
    if mono.size < n_fft:
        mono = np.pad(mono, (0, n_fft - mono.size))
    n_frames = 1 + (mono.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]  # (frames, n_fft)
    window = np.hanning(n_fft)
    magnitude = np.abs(np.fft.rfft(mono[index] * window[None, :], axis=-1)).T  # (freq, frames)
    return 20.0 * np.log10(magnitude / (window.sum() / 2) + 1e-10)


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


def ticks(span: float, count: int) -> list[float]:
    """Round values in [0, span] about `count` apart: steps of 1, 2 or 5 times a power of ten."""
    raw = max(span, 1e-9) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw - 1e-12)
    return [round(k * step, 9) for k in range(int(span / step + 1e-9) + 1)]


def panel(db: np.ndarray, sample_rate: int, duration: float, title: str = "") -> Image.Image:
    """One channel's (freq, frames) dBFS as a picture with its axes and colour bar."""
    (width, height), m = PLOT_SIZE, MARGIN
    lo, hi = DB_RANGE
    canvas = Image.new("RGB", (m["left"] + width + m["right"], m["top"] + height + m["bottom"]), "white")
    canvas.paste(Image.fromarray(image(np.clip((db[::-1] - lo) / (hi - lo), 0.0, 1.0), width, height)),
                 (m["left"], m["top"]))  # fmt: skip
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    x0, y0, y1 = m["left"], m["top"], m["top"] + height
    draw.rectangle([x0 - 1, y0 - 1, x0 + width, y1], outline="black")
    draw.text((x0, 2), title, fill="black", font=font)
    nyquist_khz = sample_rate / 2000
    for f in ticks(nyquist_khz, 4):
        y = y1 - 1 - round(f / nyquist_khz * (height - 1))
        label = f"{f:g} kHz"
        draw.line([x0 - 4, y, x0 - 1, y], fill="black")
        draw.text((x0 - 6 - draw.textlength(label, font=font), y - 5), label, fill="black", font=font)
    for t in ticks(duration, 8):
        x = x0 + round(t / max(duration, 1e-9) * (width - 1))
        label = f"{t:g} s"
        draw.line([x, y1, x, y1 + 3], fill="black")
        draw.text((min(x - draw.textlength(label, font=font) / 2, x0 + width - 20), y1 + 5), label, fill="black",
                  font=font)  # fmt: skip
    bar_x = x0 + width + 10
    canvas.paste(Image.fromarray(colour(np.repeat(np.linspace(1.0, 0.0, height)[:, None], 12, axis=1))), (bar_x, y0))
    for value in ticks(hi - lo, 4):
        y = y0 + round(value / (hi - lo) * (height - 1))
        draw.line([bar_x + 12, y, bar_x + 15, y], fill="black")
        draw.text((bar_x + 17, y - 5), f"{hi - value:g} dB", fill="black", font=font)
    return canvas


def save_png(panels: list[np.ndarray | Image.Image], path: str | Path) -> Path:
    """Stack panels top to bottom into one PNG (written atomically)."""
    path = Path(path)
    picture = Image.fromarray(np.concatenate([np.asarray(p) for p in panels], axis=0))
    atomic_write(path, lambda f: picture.save(f, format="PNG"))
    return path


def save_spectrogram(
    audio: np.ndarray, path: str | Path, sample_rate: int, *, names: tuple[str, ...] | None = None
) -> Path:
    """Write one panel per channel of `audio` (C, N) (or (N,)), stacked, each titled by `names`."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    names = names or (("left", "right") if audio.shape[0] == 2 else tuple(f"channel {i}" for i in range(len(audio))))
    duration = audio.shape[1] / sample_rate
    return save_png([panel(log_spectrogram(x), sample_rate, duration, n) for x, n in zip(audio, names)], path)


def save_file_spectrogram(media_path: str | Path, png_path: str | Path) -> Path:
    """The spectrogram of a media file's audio track."""
    audio, sample_rate = read_audio(media_path)
    return save_spectrogram(audio.numpy(), png_path, sample_rate)
