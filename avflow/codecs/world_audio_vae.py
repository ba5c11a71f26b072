"""Small audio VAE for the procedural world on MMAudio's 16 kHz front end.

Waveform (16 kHz) -> 80-bin log10 mel, hop 256 (62.5 frames/s) -> 20-dim latents at 31.25/s `(B, N, 20)`
(2x temporal downsampling of the mel). The way back to a waveform is Griffin-Lim: mel -> linear magnitude via a
non-negative least-squares-ish pseudo-inverse of the mel filterbank, then `griffin_lim_iters` phase iterations with
the same STFT (n_fft 1024, hop 256, Hann 1024). It is cheap and needs no training; quality is fine for onset and
loudness checks, not for listening tests. Mel frames = samples // 256; latents = mel frames // 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.codecs.mel import MEL_16K, MelSpectrogram
from avflow.errors import ConfigError

LATENT_DIM = 20
MEL_PER_LATENT = 2


@dataclass(frozen=True, kw_only=True)
class WorldAudioVAEConfig:
    channels: int = 128
    latent_dim: int = LATENT_DIM
    kl_weight: float = 1e-4
    mel_floor: float = -5.0  # log10 of the mel clamp (1e-5)
    griffin_lim_iters: int = 32


class ResBlock1d(nn.Module):
    def __init__(self, ch: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv1d(ch, ch, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(ch, ch, 1)
        self.norm = nn.GroupNorm(8, ch)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class WorldAudioVAE(nn.Module):
    """Conv1d VAE over log mel `(B, 80, F)` with F even; latents `(B, F/2, 20)`."""

    def __init__(self, config: WorldAudioVAEConfig | None = None):
        super().__init__()
        self.config = c = config or WorldAudioVAEConfig()
        ch = c.channels
        self.mel = MelSpectrogram(MEL_16K)
        n_mels = MEL_16K.n_mels
        self.encoder = nn.Sequential(
            nn.Conv1d(n_mels, ch, 3, padding=1),
            ResBlock1d(ch),
            nn.Conv1d(ch, ch, 4, stride=MEL_PER_LATENT, padding=1),
            ResBlock1d(ch, 2),
            ResBlock1d(ch, 4),
            nn.GroupNorm(8, ch),
            nn.SiLU(),
            nn.Conv1d(ch, 2 * c.latent_dim, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv1d(c.latent_dim, ch, 3, padding=1),
            ResBlock1d(ch, 4),
            ResBlock1d(ch, 2),
            nn.ConvTranspose1d(ch, ch, 4, stride=MEL_PER_LATENT, padding=1),
            ResBlock1d(ch),
            nn.GroupNorm(8, ch),
            nn.SiLU(),
            nn.Conv1d(ch, n_mels, 3, padding=1),
        )
        self.register_buffer("latent_mean", torch.zeros(c.latent_dim))
        self.register_buffer("latent_std", torch.ones(c.latent_dim))

    @property
    def sample_rate(self) -> int:
        return MEL_16K.sample_rate

    def wav_to_mel(self, wav: Tensor) -> Tensor:
        """`(B, samples)` at 16 kHz -> `(B, 80, F)` log10 mel with F trimmed to even."""
        mel = self.mel(wav)
        return mel[..., : mel.shape[-1] // MEL_PER_LATENT * MEL_PER_LATENT]

    def _moments(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        if mel.shape[-1] % MEL_PER_LATENT:
            raise ConfigError(f"mel frames must be even, got {mel.shape[-1]}")
        mean, logvar = self.encoder((mel - self.config.mel_floor) / 2.5 - 1.0).chunk(2, dim=1)
        return mean, logvar.clamp(-20.0, 10.0)

    def encode_mel(self, mel: Tensor, sample: bool = False) -> Tensor:
        """`(B, 80, F)` -> normalised latents `(B, F/2, 20)`."""
        mean, logvar = self._moments(mel)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        return ((z.transpose(1, 2) - self.latent_mean) / self.latent_std).contiguous()

    def encode(self, wav: Tensor, sample: bool = False) -> Tensor:
        """`(B, samples)` at 16 kHz -> `(B, N, 20)` with N = samples // 512."""
        return self.encode_mel(self.wav_to_mel(wav), sample)

    def decode_mel(self, latents: Tensor) -> Tensor:
        """`(B, N, 20)` -> log10 mel `(B, 80, 2N)`."""
        z = (latents * self.latent_std + self.latent_mean).transpose(1, 2)
        return (self.decoder(z) + 1.0) * 2.5 + self.config.mel_floor

    def decode(self, latents: Tensor, iters: int | None = None) -> Tensor:
        """`(B, N, 20)` -> waveform `(B, 512 N)` by Griffin-Lim."""
        return mel_to_wav(self.decode_mel(latents), self.mel, iters or self.config.griffin_lim_iters)

    def loss(self, mel: Tensor) -> tuple[Tensor, dict[str, float]]:
        """L1 on the log mel plus a KL penalty."""
        mean, logvar = self._moments(mel)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        rec = (self.decoder(z) + 1.0) * 2.5 + self.config.mel_floor
        l1 = (rec - mel).abs().mean()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
        return l1 + self.config.kl_weight * kl, {"mel_l1": l1.item(), "kl": kl.item()}

    @torch.no_grad()
    def fit_latent_stats(self, mel: Tensor) -> None:
        """Per-channel mean/std of the (unnormalised) posterior means over a batch of mels."""
        mean, _ = self._moments(mel)
        z = mean.transpose(1, 2).reshape(-1, self.config.latent_dim)
        self.latent_mean.copy_(z.mean(0))
        self.latent_std.copy_(z.std(0).clamp_min(1e-4))


def mel_to_wav(log_mel: Tensor, front_end: MelSpectrogram, iters: int = 32) -> Tensor:
    """Griffin-Lim: log10 mel `(B, 80, F)` -> waveform `(B, F * hop)` with the front end's STFT."""
    c = front_end.config
    basis = front_end.mel_basis  # (80, n_freqs)
    mel = 10.0 ** log_mel.float()
    magnitude = (torch.linalg.pinv(basis) @ mel).clamp_min(0.0)  # (B, n_freqs, F)
    window = front_end.window
    pad = (c.n_fft - c.hop_length) // 2
    length = magnitude.shape[-1] * c.hop_length
    phase = torch.exp(2j * torch.pi * torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(0)))
    spec = magnitude * phase.to(magnitude.device)

    frames = magnitude.shape[-1]
    total = (frames - 1) * c.hop_length + c.n_fft
    fold = dict(output_size=(1, total), kernel_size=(1, c.n_fft), stride=(1, c.hop_length))
    norm = F.fold(window.square()[None, :, None].expand(1, -1, frames), **fold)[:, 0, 0].clamp_min(1e-3)

    def istft(s: Tensor) -> Tensor:
        """Windowed overlap-add of the inverse FFT frames (center=False), normalised by the summed window^2."""
        chunks = torch.fft.irfft(s, n=c.n_fft, dim=1) * window[None, :, None]  # (B, n_fft, F)
        return F.fold(chunks, **fold)[:, 0, 0] / norm  # (B, total)

    def stft(w: Tensor) -> Tensor:
        return torch.stft(w, c.n_fft, c.hop_length, c.win_length, window, center=False, return_complex=True)

    for _ in range(iters):
        rebuilt = stft(istft(spec))
        spec = magnitude * torch.exp(1j * rebuilt.angle())
    wav = istft(spec)[:, pad : pad + length]
    return F.pad(wav, (0, length - wav.shape[-1])).clamp(-1.0, 1.0)


def reconstruction_metrics(mel: Tensor, mel_rec: Tensor, wav: Tensor | None = None, wav_rec: Tensor | None = None):
    """Log-mel L1 and mel SNR (dB); with waveforms, the log-mel L1 of the Griffin-Lim round trip."""
    mel_rec = mel_rec.detach()
    l1 = float((mel_rec - mel).abs().mean())
    snr = 10.0 * torch.log10(mel.var() / (mel_rec - mel).var().clamp_min(1e-12)).item()
    out = {"mel_l1": l1, "mel_snr_db": snr}
    if wav is not None and wav_rec is not None:
        front_end = MelSpectrogram(MEL_16K)
        n = min(wav.shape[-1], wav_rec.shape[-1])
        out["wav_mel_l1"] = float((front_end(wav_rec[..., :n]) - front_end(wav[..., :n])).abs().mean())
    return out
