"""Interaural cue streams: a binaural pair as each ear's level and lead relative to its mono mix, per token and band.

Why: a generator of the binaural codec's latents cannot place a sound better than the codec keeps its cues (on the
KEMAR test split the ground truth through the codec reads 2.8 dB ILD and 61 µs ITD error at the events, worse than a
rule-based spatialiser), while these streams, rendered back onto the true mono, read 0.1 dB and 1 µs
(docs/binaural.md). So the binaural model can generate these instead when a mono is given.

Encoding, per token k (`token_rate` per second, 64 for a 2 s clip at 32/s) from the STFT (Hann `n_fft`, `hop`) of
the ears L, R and their mix M = (L + R) / 2, over the frames whose start falls in the token:
    gain_e,b = 10·log10((P_e,b + ε) / (P_M,b + ε))    (P: power summed over band b's bins, ERB-rate bands)
    ITD_k = argmax_τ Σ_f Re(Ĉ_f·e^{−i2πfτ}),  Ĉ = C/|C| over the bins within `phat_db` of the strongest, C = Σ L·R*
    (> 0 when the left ear leads; searched in steps of `itd_step_s` within ±`max_itd_s`)
and ear e's row is [gain_e,0 … gain_e,B−1, ±ITD_k/2 in ms] (left +, right −), scaled by `gain_scale` and
`lead_scale` to unit-order values. Mirroring a clip swaps the two rows exactly, as the binaural model's branches
expect. The mono's own row (`mono_features`): its band levels in dB re full scale and its broadband level.

Decoding onto a mono M (`decode`): per token, held over its frames, ILD_b = gain_L,b − gain_R,b and
ITD = lead_L − lead_R give r = 10^{ILD/20} per bin of band b and φ = 2πf·ITD, then `apply_cues` (the cue-transfer
formula: L/R = r·e^{iφ}, (L + R)/2 = M).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from avflow.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class CueStreamConfig:
    sample_rate: int = 16000
    token_rate: float = 32.0  # tokens per second (the binaural model's sequence rate)
    n_fft: int = 512
    hop: int = 128
    bands: int = 31  # ERB-rate bands from band_low_hz to Nyquist; a row is bands + 1 wide
    band_low_hz: float = 50.0
    max_itd_s: float = 0.001
    itd_step_s: float = 2e-6
    phat_db: float = 50.0  # the ITD uses the bins within this of the token's strongest cross-spectrum bin
    floor_db: float = -100.0  # ε of the gains, dB re full scale power
    gain_scale: float = 0.25  # stream value = gain dB x gain_scale
    lead_scale: float = 4.0  # stream value = lead ms x lead_scale
    mono_offset_db: float = 88.0  # mono feature = (level dB + mono_offset_db) / mono_scale_db
    mono_scale_db: float = 10.0
    max_ild_db: float = 30.0
    min_norm: float = 0.25  # floor of |D| in `apply_cues`

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.token_rate <= 0 or self.hop <= 0 or self.n_fft < 2 * self.hop:
            raise ConfigError("cue stream needs sample_rate, token_rate, hop > 0 and n_fft >= 2 x hop")
        if not 1 <= self.bands <= self.n_fft // 2:
            raise ConfigError(f"cue stream bands must be in [1, {self.n_fft // 2}], got {self.bands}")

    @property
    def dim(self) -> int:
        """Values per ear and token."""
        return self.bands + 1

    def tokens(self, n_samples: int) -> int:
        return max(1, int(round(n_samples / self.sample_rate * self.token_rate)))


def band_edges(cfg: CueStreamConfig) -> np.ndarray:
    """(bands + 1,) FFT-bin edges, ERB-rate spaced, every band at least one bin wide."""
    nyquist = cfg.sample_rate / 2

    def erb(f):
        return 21.4 * np.log10(1 + 0.00437 * f)

    hz = (10 ** (np.linspace(erb(cfg.band_low_hz), erb(nyquist), cfg.bands + 1) / 21.4) - 1) / 0.00437
    edges = np.round(hz / nyquist * (cfg.n_fft // 2)).astype(int)
    edges[0], edges[-1] = 0, cfg.n_fft // 2 + 1
    for i in range(1, len(edges) - 1):
        edges[i] = max(edges[i], edges[i - 1] + 1)
    return edges


def _stft(x: torch.Tensor, cfg: CueStreamConfig) -> torch.Tensor:
    window = torch.hann_window(cfg.n_fft, dtype=x.dtype)
    return torch.stft(x, cfg.n_fft, cfg.hop, window=window, center=True, return_complex=True)  # (..., F, T)


def _frame_tokens(n_frames: int, n_tokens: int, cfg: CueStreamConfig) -> np.ndarray:
    """(T,) the token each STFT frame belongs to (by its start time)."""
    per_token = cfg.sample_rate / cfg.token_rate
    return np.clip((np.arange(n_frames) * cfg.hop / per_token).astype(int), 0, n_tokens - 1)


def _pooled(spec: np.ndarray, n_tokens: int, cfg: CueStreamConfig) -> tuple[np.ndarray, np.ndarray]:
    """spec (C, F, T) -> per-token sums: power (C, F, N) and the cross spectrum of channels 0 and 1 (F, N)."""
    t = spec.shape[-1]
    pool = np.zeros((t, n_tokens))
    pool[np.arange(t), _frame_tokens(t, n_tokens, cfg)] = 1.0
    power = (np.abs(spec) ** 2) @ pool
    cross = (spec[0] * spec[1].conj()) @ pool if spec.shape[0] > 1 else None
    return power, cross


def _bands(power: np.ndarray, cfg: CueStreamConfig) -> np.ndarray:
    """(..., F, N) -> (..., bands, N) summed over each band's bins."""
    edges = band_edges(cfg)
    return np.stack([power[..., edges[b] : edges[b + 1], :].sum(-2) for b in range(cfg.bands)], -2)


def _itd(cross: np.ndarray, cfg: CueStreamConfig) -> np.ndarray:
    """Pooled cross spectrum (F, N) -> (N,) GCC-PHAT delay in seconds, > 0 when the left ear leads."""
    freqs = np.arange(cross.shape[0]) * cfg.sample_rate / cfg.n_fft
    lags = np.arange(-cfg.max_itd_s, cfg.max_itd_s + cfg.itd_step_s / 2, cfg.itd_step_s)
    mag = np.abs(cross)
    keep = mag >= mag.max(0, keepdims=True) * 10 ** (-cfg.phat_db / 10)
    phat = np.where(keep & (mag > 0), cross / np.maximum(mag, 1e-30), 0.0)  # (F, N)
    score = np.real(phat.T @ np.exp(-2j * np.pi * freqs[:, None] * lags[None]))  # (N, lags)
    return lags[score.argmax(1)]


def encode(audio: np.ndarray, cfg: CueStreamConfig, n_tokens: int | None = None) -> np.ndarray:
    """[left, right] (2, S) -> cue streams (2, N, bands + 1) float32 (module docstring), N = `cfg.tokens(S)`."""
    a = np.asarray(audio, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != 2:
        raise ConfigError(f"cue streams need a [left, right] pair (2, S), got {a.shape}")
    n = n_tokens or cfg.tokens(a.shape[1])
    x = torch.from_numpy(np.concatenate([a, a.mean(0, keepdims=True)]))
    power, cross = _pooled(_stft(x, cfg).numpy(), n, cfg)  # (3, F, N), (F, N)
    eps = 10 ** (cfg.floor_db / 10)
    bands = _bands(power, cfg)  # (3, B, N)
    gain = 10 * np.log10((bands[:2] + eps) / (bands[2:] + eps))  # (2, B, N)
    lead_ms = 1e3 * _itd(cross, cfg) / 2  # (N,)
    out = np.empty((2, n, cfg.dim), dtype=np.float32)
    out[:, :, : cfg.bands] = cfg.gain_scale * gain.transpose(0, 2, 1)
    out[0, :, -1], out[1, :, -1] = cfg.lead_scale * lead_ms, -cfg.lead_scale * lead_ms
    return out


def mono_features(mono: np.ndarray, cfg: CueStreamConfig, n_tokens: int | None = None) -> np.ndarray:
    """mono (S,) -> (N, bands + 1) float32: per token its band levels and its broadband level (dB re full scale,
    offset and scaled by `mono_offset_db`, `mono_scale_db`): what sounds when, for the model to place."""
    m = np.asarray(mono, dtype=np.float64)
    if m.ndim != 1:
        raise ConfigError(f"mono features need a mono (S,), got {m.shape}")
    n = n_tokens or cfg.tokens(m.shape[0])
    power, _ = _pooled(_stft(torch.from_numpy(m)[None], cfg).numpy(), n, cfg)  # (1, F, N)
    norm = (cfg.n_fft / 2) ** 2 * (cfg.sample_rate / cfg.token_rate / cfg.hop)  # a full-scale sine per token
    eps = 10 ** (cfg.floor_db / 10)
    levels = np.concatenate([_bands(power, cfg)[0], power[0].sum(0, keepdims=True)])  # (B + 1, N)
    db = 10 * np.log10(levels / norm + eps)
    return ((db + cfg.mono_offset_db) / cfg.mono_scale_db).T.astype(np.float32)


def apply_cues(spec_m: torch.Tensor, r: torch.Tensor, phi: torch.Tensor, min_norm: float) -> torch.Tensor:
    """Mono STFT M (F, T), level ratio r = |L/R| and phase φ = arg(L·R*) per bin -> ears (2, F, T) with L/R = r·e^{iφ}
    and (L + R)/2 = M: g_L = 2r/(1 + r), g_R = 2/(1 + r), D = (g_L·e^{iφ/2} + g_R·e^{−iφ/2})/2 (|D| ≥ min_norm),
    L = M·g_L·e^{iφ/2}/D, R = M·g_R·e^{−iφ/2}/D."""
    half = torch.polar(torch.ones_like(phi), 0.5 * phi)
    g_l, g_r = 2.0 * r / (1.0 + r), 2.0 / (1.0 + r)
    d = (g_l * half + g_r * half.conj()) / 2.0
    d = d / d.abs().clamp_min(1e-12) * d.abs().clamp_min(min_norm)
    return torch.stack([spec_m * g_l * half / d, spec_m * g_r * half.conj() / d])


def decode(mono: np.ndarray, cues: np.ndarray, cfg: CueStreamConfig) -> np.ndarray:
    """mono (S,) and cue streams (2, N, bands + 1) -> [left, right] (2, S) float32 whose mix is the mono."""
    m = torch.as_tensor(np.asarray(mono, dtype=np.float64))
    c = np.asarray(cues, dtype=np.float64)
    if m.ndim != 1 or c.ndim != 3 or c.shape[0] != 2 or c.shape[2] != cfg.dim:
        raise ConfigError(f"decode needs mono (S,) and cues (2, N, {cfg.dim}), got {tuple(m.shape)}, {c.shape}")
    spec = _stft(m, cfg)  # (F, T)
    n_bins, n_frames = spec.shape
    k = _frame_tokens(n_frames, c.shape[1], cfg)  # each frame holds its token's cues
    ild = (c[0, :, : cfg.bands] - c[1, :, : cfg.bands]) / cfg.gain_scale  # (N, B) dB
    itd = (c[0, :, -1] - c[1, :, -1]) / cfg.lead_scale * 1e-3  # (N,) s
    band_of_bin = np.repeat(np.arange(cfg.bands), np.diff(band_edges(cfg)))  # (F,)
    ild_bins = np.clip(ild[k][:, band_of_bin].T, -cfg.max_ild_db, cfg.max_ild_db)  # (F, T)
    freqs = np.arange(n_bins) * cfg.sample_rate / cfg.n_fft
    r = torch.from_numpy(10.0 ** (ild_bins / 20.0))
    phi = torch.from_numpy(2 * np.pi * freqs[:, None] * itd[k][None])
    ears = apply_cues(spec, r, phi, cfg.min_norm)
    window = torch.hann_window(cfg.n_fft, dtype=torch.float64)
    out = torch.istft(ears, cfg.n_fft, cfg.hop, window=window, center=True, length=m.shape[0])
    return out.numpy().astype(np.float32)


Renderer = Callable[[np.ndarray, int, np.ndarray, float], np.ndarray]  # (mono (S,), rate, frames, fps) -> (2, S)


def rendered_streams(render: Renderer, mono: np.ndarray, frames: np.ndarray, fps: float, config: CueStreamConfig,
                     n_tokens: int) -> torch.Tensor:  # fmt: skip
    """(2, N, C) float32 cue streams of `render`'s binaural rendering of `mono` (S,) at `config.sample_rate` (e.g. the
    spatialiser's): a cue model's prior condition, made the same way in its training cache and its pipeline."""
    pair = np.asarray(render(np.asarray(mono, dtype=np.float64), config.sample_rate, frames, fps), dtype=np.float64)
    return torch.from_numpy(encode(pair, config, n_tokens)).float()
