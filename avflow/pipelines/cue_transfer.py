"""Interaural cues of a generated pair carried onto a given mono, so the output keeps the mono's content and timing.

Per time-frequency bin (STFT, Hann window `n_fft`, hop `hop`) of the generated ears L̂, R̂ and the mono M:

    P_L = S|L̂|², P_R = S|R̂|², C = S(L̂·R̂*)        (S: a box average over `smooth` bins x frames)
    r = sqrt(P_L / P_R)  (ILD = 20·log10 r, clipped to ±max_ild_db),  φ = arg C  (IPD; > 0 when the left leads)
    g_L = 2r / (1 + r),  g_R = 2 / (1 + r),  D = (g_L·e^{+iφ/2} + g_R·e^{−iφ/2}) / 2   (|D| kept ≥ min_norm)
    L = M·g_L·e^{+iφ/2} / D,  R = M·g_R·e^{−iφ/2} / D

so L / R = r·e^{iφ} (the generated ILD and IPD) and (L + R) / 2 = M in every bin (up to the |D| floor), i.e. the
mono mix is the given mono, sample for sample after the inverse STFT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from avflow.data.interaural_cues import apply_cues


@dataclass(frozen=True, kw_only=True)
class CueTransferConfig:
    n_fft: int = 512
    hop: int = 128
    smooth: tuple[int, int] = (3, 5)  # box average over (frequency bins, frames), odd sizes
    max_ild_db: float = 30.0
    min_norm: float = 0.25  # floor of |D| (bins where the two ears are nearly opposite in phase)


def _stft(x: torch.Tensor, cfg: CueTransferConfig) -> torch.Tensor:
    window = torch.hann_window(cfg.n_fft, dtype=x.dtype)
    return torch.stft(x, cfg.n_fft, cfg.hop, window=window, center=True, return_complex=True)  # (..., F, T)


def _smooth(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(F, T) real -> box-averaged (F, T), edges padded by replication."""
    pad = (size[1] // 2, size[1] // 2, size[0] // 2, size[0] // 2)
    y = F.pad(x[None, None], pad, mode="replicate")
    return F.avg_pool2d(y, size, stride=1)[0, 0]


def transfer_cues(
    mono: np.ndarray, pair: np.ndarray, config: CueTransferConfig | None = None
) -> np.ndarray:
    """mono (S,) and a generated pair (2, S') [left, right] -> (2, S) float32 [left, right] whose mix is `mono` and
    whose per-bin ILD and IPD are the pair's (module docstring). `pair` is cut or zero-padded to S samples."""
    cfg = config or CueTransferConfig()
    m = torch.as_tensor(np.asarray(mono, dtype=np.float64))
    if m.ndim != 1 or np.asarray(pair).ndim != 2 or np.asarray(pair).shape[0] != 2:
        raise ValueError(f"transfer_cues needs mono (S,) and pair (2, S'), got {tuple(m.shape)}, {np.shape(pair)}")
    s = m.shape[0]
    p = torch.zeros(2, s, dtype=torch.float64)
    src = torch.as_tensor(np.asarray(pair, dtype=np.float64))[:, :s]
    p[:, : src.shape[1]] = src
    spec_m, spec_p = _stft(m, cfg), _stft(p, cfg)  # (F, T), (2, F, T)
    left, right = spec_p[0], spec_p[1]
    p_l, p_r = _smooth(left.abs().square(), cfg.smooth), _smooth(right.abs().square(), cfg.smooth)
    x = left * right.conj()
    cross = torch.complex(_smooth(x.real, cfg.smooth), _smooth(x.imag, cfg.smooth))
    limit = 10.0 ** (cfg.max_ild_db / 20.0)
    r = ((p_l + 1e-20) / (p_r + 1e-20)).sqrt().clamp(1.0 / limit, limit)
    out = apply_cues(spec_m, r, torch.angle(cross), cfg.min_norm)  # (2, F, T)
    window = torch.hann_window(cfg.n_fft, dtype=torch.float64)
    wav = torch.istft(out, cfg.n_fft, cfg.hop, window=window, center=True, length=s)
    return wav.numpy().astype(np.float32)
