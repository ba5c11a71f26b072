"""A fixed, fast per-channel audio representation for the binaural world models (no learned codec).

Encode (per ear): MMAudio's 16 kHz log-mel (80 bins, hop 256, 62.5 frames/s) -> pairs of frames stacked (160) ->
a fixed PCA basis fitted on world audio -> 20 whitened dims at 31.25 tokens/s, i.e. the conventions' latent shape.
Decode: PCA back -> log-mel -> linear magnitude (non-negative least squares through the mel filters) -> one phase for
both ears by Griffin-Lim on the mid magnitude -> per-ear iSTFT. Magnitudes carry the level difference (ILD) but a
shared phase carries no time difference, so the ITD is restored from each token's broadband ILD through the
spherical-head model of the world (`avflow.world.binaural`): ILD -> azimuth -> Woodworth ITD, applied as a
per-sample delay of the lagging ear. This is a documented prior, not a learned decoder.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from avflow.codecs.mel import MEL_16K, MelSpectrogram
from avflow.errors import WeightsError
from avflow.weights import load_strict, read_state_dict

LATENT_DIM = 20
FRAMES_PER_TOKEN = 2
SAMPLES_PER_TOKEN = MEL_16K.hop_length * FRAMES_PER_TOKEN  # 512 -> 31.25 tokens/s at 16 kHz
FEATURES_FILE = Path(__file__).resolve().parent.parent / "assets" / "binaural" / "features.safetensors"  # shipped


def num_tokens(n_samples: int) -> int:
    """Tokens for a waveform of n_samples (the last partial token is padded)."""
    return -(-n_samples // SAMPLES_PER_TOKEN)


class BinauralFeatures(nn.Module):
    """Waveforms (B, 2, N) <-> streams `left`, `right` each (B, num_tokens(N), 20)."""

    def __init__(self, dim: int = LATENT_DIM):
        super().__init__()
        self.mel = MelSpectrogram(MEL_16K)
        width = MEL_16K.n_mels * FRAMES_PER_TOKEN
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("basis", torch.eye(width)[:dim])  # (dim, width) orthonormal rows
        self.register_buffer("scale", torch.ones(dim))  # std of each component

    @property
    def sample_rate(self) -> int:
        return MEL_16K.sample_rate

    def _stacked_mel(self, wav: Tensor) -> Tensor:
        """(B, N) -> (B, tokens, 160) log-mel frame pairs."""
        n = wav.shape[-1]
        wav = torch.nn.functional.pad(wav, (0, num_tokens(n) * SAMPLES_PER_TOKEN - n))
        mel = self.mel(wav)  # (B, 80, frames)
        b, m, f = mel.shape
        return mel.transpose(1, 2).reshape(b, f // FRAMES_PER_TOKEN, FRAMES_PER_TOKEN * m)

    def fit(self, wavs: Tensor) -> None:
        """PCA of the stacked log-mel of (B, N) mono waveforms (each ear a waveform)."""
        x = self._stacked_mel(wavs.float()).reshape(-1, self.mean.numel()).double()
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        dim = self.basis.shape[0]
        self.mean.copy_(mean.float())
        self.basis.copy_(vh[:dim].float())
        self.scale.copy_((s[:dim] / (x.shape[0] - 1) ** 0.5).float().clamp_min(1e-4))

    def encode_channel(self, wav: Tensor) -> Tensor:
        """(B, N) -> (B, tokens, dim)."""
        return ((self._stacked_mel(wav.float()) - self.mean) @ self.basis.T) / self.scale

    def encode(self, audio: Tensor) -> dict[str, Tensor]:
        """(B, 2, N) [left, right] -> {"left", "right"} each (B, tokens, dim)."""
        return {"left": self.encode_channel(audio[:, 0]), "right": self.encode_channel(audio[:, 1])}

    def decode_mel(self, z: Tensor) -> Tensor:
        """(B, tokens, dim) -> log-mel (B, 80, 2 * tokens)."""
        x = (z * self.scale) @ self.basis + self.mean  # (B, tokens, 160)
        b, n, _ = x.shape
        return x.reshape(b, n * FRAMES_PER_TOKEN, MEL_16K.n_mels).transpose(1, 2)

    def _magnitude(self, log_mel: Tensor) -> Tensor:
        """Log-mel (B, 80, F) -> linear STFT magnitude (B, 513, F) by projected least squares."""
        mel = torch.pow(10.0, log_mel.float())
        basis = self.mel.mel_basis  # (80, 513)
        mag = torch.linalg.pinv(basis) @ mel
        for _ in range(8):  # projected gradient steps towards min |basis @ mag - mel|, mag >= 0
            mag = (mag - 0.5 * basis.T @ (basis @ mag - mel) / basis.square().sum(0).max()).clamp_min(0.0)
        return mag

    def decode(self, streams: dict[str, Tensor], n_samples: int | None = None, iters: int = 32) -> Tensor:
        """{"left", "right"} (B, tokens, dim) -> (B, 2, N) waveforms with the spherical-head ITD restored."""
        mags = [self._magnitude(self.decode_mel(streams[s])) for s in ("left", "right")]  # (B, 513, F) each
        phase = griffin_lim_phase(0.5 * (mags[0] + mags[1]), iters)
        ears = [_istft(m * phase) for m in mags]
        audio = torch.stack(ears, 1)  # (B, 2, N')
        itd = itd_from_ild(token_ild(audio))  # (B, tokens) seconds
        audio = torch.stack([apply_itd(a, d, self.sample_rate) for a, d in zip(audio, itd)])
        n = n_samples or audio.shape[-1]
        return torch.nn.functional.pad(audio, (0, max(0, n - audio.shape[-1])))[..., :n]


def load_features(path: str | Path) -> BinauralFeatures:
    """A fitted basis from safetensors (keys mean, basis, scale)."""
    state = read_state_dict(path)
    if "basis" not in state:
        raise WeightsError(f"{path}: not a binaural feature basis (no 'basis' tensor)")
    codec = BinauralFeatures(state["basis"].shape[0])
    load_strict(codec, state, str(path))
    return codec.eval()


def _window() -> Tensor:
    return torch.hann_window(MEL_16K.win_length)


def _stft(wav: Tensor) -> Tensor:
    """(B, N) -> complex (B, 513, N // 256) on the mel front end's frame grid."""
    c = MEL_16K
    pad = (c.n_fft - c.hop_length) // 2
    x = torch.nn.functional.pad(wav[:, None], (pad, pad), mode="reflect")[:, 0]
    return torch.stft(x, c.n_fft, c.hop_length, c.win_length, _window(), center=False, return_complex=True)


def _istft(spec: Tensor) -> Tensor:
    """Inverse of `_stft`: (B, 513, F) -> (B, F * 256)."""
    c = MEL_16K
    pad = (c.n_fft - c.hop_length) // 2
    n = spec.shape[-1] * c.hop_length
    wav = torch.istft(spec, c.n_fft, c.hop_length, c.win_length, _window(), center=True)  # frame f centred at f*hop
    # `_stft` centres frame f at f * hop + n_fft / 2 - pad of the signal, so shift right by the difference
    wav = torch.nn.functional.pad(wav, (c.n_fft // 2 - pad, 0))[:, :n]
    return torch.nn.functional.pad(wav, (0, n - wav.shape[-1]))


def griffin_lim_phase(mag: Tensor, iters: int = 32, seed: int = 0) -> Tensor:
    """Unit phasors (B, 513, F) consistent with magnitude `mag` (fast Griffin-Lim, momentum 0.99)."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.exp(2j * torch.pi * torch.rand(mag.shape, generator=g))
    prev = torch.zeros_like(angles)
    for _ in range(iters):
        rebuilt = _stft(_istft(mag * angles))
        rebuilt = rebuilt[..., : mag.shape[-1]]
        if rebuilt.shape[-1] < mag.shape[-1]:
            rebuilt = torch.nn.functional.pad(rebuilt, (0, mag.shape[-1] - rebuilt.shape[-1]))
        accel = rebuilt - 0.99 * prev
        prev = rebuilt
        angles = accel / accel.abs().clamp_min(1e-8)
    return angles


def token_ild(audio: Tensor, smooth: int = 8) -> Tensor:
    """(B, 2, N) -> ILD (dB, positive = left louder) per 512-sample token (B, tokens), from ear energies summed over
    +-`smooth` tokens, so quiet tokens take the ILD of the loud sound around them."""
    n = audio.shape[-1]
    a = torch.nn.functional.pad(audio, (0, num_tokens(n) * SAMPLES_PER_TOKEN - n))
    e = a.reshape(*a.shape[:2], -1, SAMPLES_PER_TOKEN).square().mean(-1)  # (B, 2, tokens)
    kernel = torch.ones(2, 1, 2 * smooth + 1, dtype=e.dtype)
    e = torch.nn.functional.conv1d(e, kernel, padding=smooth, groups=2) + 1e-10
    return 10.0 * torch.log10(e[:, 0] / e[:, 1])


@lru_cache(maxsize=1)
def ild_to_azimuth_table(sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """(ILD dB ascending, azimuth deg) of white noise rendered by the world's spherical head over the field of view."""
    from avflow.world.binaural import render_sphere

    noise = np.random.default_rng(0).standard_normal(sample_rate // 2)
    az = np.linspace(-45.0, 45.0, 31)
    ilds = []
    for a in az:
        out = render_sphere(noise, np.full(64, a), sample_rate)
        ilds.append(10 * np.log10(np.mean(out[0] ** 2) / np.mean(out[1] ** 2)))
    ilds = np.asarray(ilds)
    order = np.argsort(ilds)
    return ilds[order], az[order]


def itd_from_ild(ild_db: Tensor, sample_rate: int = 16000) -> Tensor:
    """Per-token ILD (dB) -> Woodworth ITD (s, > 0 when the left ear leads) via the spherical-head azimuth."""
    from avflow.world.binaural import woodworth_itd

    ilds, az = ild_to_azimuth_table(sample_rate)
    azimuth = np.interp(ild_db.detach().cpu().double().numpy(), ilds, az)
    return torch.from_numpy(woodworth_itd(azimuth)).to(ild_db.dtype)


def apply_itd(audio: Tensor, itd: Tensor, sample_rate: int) -> Tensor:
    """(2, N) and per-token ITD (tokens,) s -> (2, N) with the lagging ear delayed (per-sample interpolation)."""
    from avflow.world.binaural import block_to_samples, fractional_delay

    n = audio.shape[-1]
    d = block_to_samples(itd.double().numpy() * sample_rate, n, SAMPLES_PER_TOKEN)  # samples, > 0: delay right
    x = audio.double().numpy()
    left = fractional_delay(x[0], np.maximum(-d, 0.0)) if np.any(d < -1e-6) else x[0]
    right = fractional_delay(x[1], np.maximum(d, 0.0)) if np.any(d > 1e-6) else x[1]
    return torch.from_numpy(np.stack([left, right])).to(audio.dtype)
