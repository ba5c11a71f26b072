"""Interaural time difference (ITD) for the binaural audio codec: measured per latent, predicted, and rendered.

The codec decodes each ear on its own, and its predicted phase carries no usable interaural delay: the decoded ears
line up at lag 0 whatever the source's side (docs/codecs.md). Yet the two ears' latents do differ with the delay. So
a small head reads both ears' latents and predicts the ITD of every latent, and the decoder delays the lagging ear
by it:

    itd_k = h([z_L, z_R])_k − h([z_R, z_L])_k      (samples, > 0 when the left ear leads; antisymmetric by design,
                                                    so swapping the ears negates it)
    out_L(t) = dec_L(t − max(0, −itd(t))),  out_R(t) = dec_R(t − max(0, itd(t)))

with `itd(t)` linearly interpolated between latent centres and the fractional delay read by linear interpolation.
The head is trained on the ITD the reference's ears have at each latent (:func:`latent_itd`, GCC-PHAT over a window
of two latents, weighted by how clear and how loud it is), from the frozen encoder's latents, so the latent space
and every model trained on it stay as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avflow.codecs.frame_curves import frame_curve


class InterauralDelayHead(nn.Module):
    """`left`, `right` latents `(B, N, C)` -> ITD per latent `(B, N)` in samples (> 0: the left ear leads)."""

    def __init__(self, channels: int, width: int, kernel: int = 5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(2 * channels, width, kernel, padding=kernel // 2), nn.GELU(),
            nn.Conv1d(width, width, kernel, padding=kernel // 2), nn.GELU(),
            nn.Conv1d(width, 1, 1),
        )  # fmt: skip

    def forward(self, left: Tensor, right: Tensor) -> Tensor:
        lr = torch.cat([left, right], dim=-1).transpose(1, 2)  # (B, 2C, N)
        rl = torch.cat([right, left], dim=-1).transpose(1, 2)
        return (self.net(lr) - self.net(rl))[:, 0]  # (B, N)


def delay_ears(wav: Tensor, itd: Tensor, samples_per_latent: int) -> Tensor:
    """Delay the lagging ear of `wav` `(B, 2, T)` [left, right] by `|itd|` samples (`itd` `(B, N)` per latent, > 0:
    the left ear leads, so the right one is delayed), linearly interpolated between latent centres."""
    t = wav.shape[-1]
    pos = torch.arange(t, dtype=wav.dtype, device=wav.device)  # (T,)
    per_sample = frame_curve(itd, samples_per_latent, t)  # (B, T)
    delays = torch.stack([(-per_sample).clamp_min(0.0), per_sample.clamp_min(0.0)], dim=1)  # (B, 2, T)
    src = pos - delays  # where each output sample reads from
    lo = src.floor()
    frac = src - lo
    lo = lo.long()

    def read(index: Tensor) -> Tensor:
        inside = (index >= 0) & (index < t)
        return torch.gather(wav, 2, index.clamp(0, t - 1)) * inside

    return read(lo) * (1 - frac) + read(lo + 1) * frac


def latent_itd(
    audio: Tensor, samples_per_latent: int, max_lag: int, upsample: int = 4, floor_db: float = 40.0
) -> tuple[Tensor, Tensor]:
    """The ITD of `audio` `(B, 2, T)` at every latent and its weight, both `(B, T // samples_per_latent)`.

    Per latent: GCC-PHAT of the two ears over a Hann window of two latents centred on it, its peak searched over
    `|lag| <= max_lag` samples on a grid of `1 / upsample` sample and refined by a parabola. Weight: the peak's
    height (how well one delay explains the window) squared, times the window's loudness on a ramp from `floor_db`
    below the clip's loudest window (0) to it (1), so silence and diffuse ambience teach nothing. The estimator is
    `avflow.eval.side.itd_of`'s (same band limit and sign), batched in torch over every latent of a training batch,
    where a per-window numpy call would cost more than the training step."""
    b, _, t = audio.shape
    hop = samples_per_latent
    n = t // hop
    win = 2 * hop
    padded = F.pad(audio[..., : n * hop], (hop // 2, hop + hop // 2))
    frames = padded.unfold(-1, win, hop)[:, :, :n] * torch.hann_window(win, dtype=audio.dtype, device=audio.device)
    nfft = 1 << math.ceil(math.log2(win + max_lag))
    spec = torch.fft.rfft(frames.double(), nfft)  # (B, 2, N, F)
    cross = spec[:, 0].conj() * spec[:, 1]  # peaks at lag > 0 when the right ear lags
    mag = cross.abs()
    band = mag >= mag.amax(-1, keepdim=True) * 1e-5  # the frequencies the sound occupies (50 dB)
    phat = torch.where(band, cross / mag.clamp_min(1e-30), 0) * (cross.shape[-1] / band.sum(-1, keepdim=True))
    lags = torch.arange(-max_lag * upsample, max_lag * upsample + 1, device=audio.device) / upsample  # (L,)
    f = torch.arange(cross.shape[-1], device=audio.device)
    twice = torch.where((f == 0) | (f == nfft // 2), 1.0, 2.0).double()
    basis = twice[:, None] * torch.exp(2j * math.pi * f[:, None].double() * lags[None].double() / nfft)  # (F, L)
    r = (phat @ basis).real / nfft  # (B, N, L)
    j = r.argmax(-1, keepdim=True)
    jc = j.clamp(1, r.shape[-1] - 2)
    a, c, e = r.gather(-1, jc - 1), r.gather(-1, jc), r.gather(-1, jc + 1)
    den = a - 2 * c + e
    frac = torch.where((den < 0) & (j == jc), (0.5 * (a - e) / den.clamp(max=-1e-12)).clamp(-0.5, 0.5), 0.0)
    itd = lags[j[..., 0]] + frac[..., 0] / upsample  # > 0 when the right ear lags: the left one leads
    peak = r.gather(-1, j)[..., 0].clamp(0.0, 1.0)
    energy = frames.double().square().sum(dim=(1, 3))  # (B, N)
    level = 10 * torch.log10(energy / energy.amax(-1, keepdim=True).clamp_min(1e-30) + 1e-30)
    weight = peak.square() * ((level + floor_db) / floor_db).clamp(0.0, 1.0)
    return itd.to(audio.dtype), weight.to(audio.dtype)
