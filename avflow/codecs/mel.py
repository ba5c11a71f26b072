"""MMAudio's log-mel front end (16 kHz: 80 bins, log10; 44.1 kHz: 128 bins, natural log)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True, kw_only=True)
class MelConfig:
    sample_rate: int
    n_fft: int
    n_mels: int
    hop_length: int
    win_length: int
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    log: str = "log10"  # "log10" | "ln"
    htk: bool = False  # mel scale: Slaney (librosa default) or HTK
    slaney_norm: bool = True  # area-normalize each triangle (librosa norm="slaney")
    clamp_min: float = 1e-5


MEL_16K = MelConfig(sample_rate=16000, n_fft=1024, n_mels=80, hop_length=256, win_length=1024, fmax=8000, log="log10")
MEL_44K = MelConfig(sample_rate=44100, n_fft=2048, n_mels=128, hop_length=512, win_length=2048, fmax=22050, log="ln")
MEL_CONFIGS = {"16k": MEL_16K, "44k": MEL_44K}


def hz_to_mel(hz: np.ndarray, htk: bool = False) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    f_sp = 200.0 / 3  # linear below 1 kHz, logarithmic above (Slaney's Auditory Toolbox)
    min_log_hz, min_log_mel, log_step = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    linear = hz / f_sp
    logarithmic = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / log_step
    return np.where(hz >= min_log_hz, logarithmic, linear)


def mel_to_hz(mel: np.ndarray, htk: bool = False) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, log_step = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    linear = mel * f_sp
    logarithmic = min_log_hz * np.exp(log_step * (np.maximum(mel, min_log_mel) - min_log_mel))
    return np.where(mel >= min_log_mel, logarithmic, linear)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    htk: bool = False,
    slaney_norm: bool = True,
) -> torch.Tensor:
    """Triangular mel filters (n_mels, n_fft // 2 + 1), float32, as librosa.filters.mel computes them."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sample_rate / 2, 1 + n_fft // 2)
    mel_edges = np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2)
    hz_edges = mel_to_hz(mel_edges, htk)  # (n_mels + 2,)
    widths = np.diff(hz_edges)
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freqs)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (n_mels, n_freqs)
    if slaney_norm:
        weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


class MelSpectrogram(nn.Module):
    """Waveform (B, N) in [-1, 1] -> log mel (B, n_mels, frames), frames = N // hop_length."""

    def __init__(self, config: MelConfig = MEL_16K):
        super().__init__()
        self.config = config
        c = config
        basis = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, c.fmax, c.htk, c.slaney_norm)
        self.register_buffer("mel_basis", basis, persistent=False)  # (n_mels, n_freqs)
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        c = self.config
        squeeze = waveform.ndim == 1
        x = waveform[None] if squeeze else waveform  # (B, N)
        x = x.float().clamp(-1.0, 1.0)
        pad = (c.n_fft - c.hop_length) // 2
        x = F.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
        spec = torch.stft(
            x,
            c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window,
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )  # (B, n_freqs, frames)
        magnitude = torch.sqrt(spec.real.square() + spec.imag.square() + 1e-9)
        mel = torch.matmul(self.mel_basis, magnitude).clamp(min=c.clamp_min)  # (B, n_mels, frames)
        mel = torch.log10(mel) if c.log == "log10" else torch.log(mel)
        return mel[0] if squeeze else mel
