"""Waveform quality measures for codecs and generators (no learned model)."""

from __future__ import annotations

import torch
from torch import Tensor

STFT_RESOLUTIONS = ((256, 64), (512, 128), (1024, 256))  # (n_fft, hop), Hann windows of n_fft


def stft_log_distance(pred: Tensor, ref: Tensor, resolutions=STFT_RESOLUTIONS, floor: float = 1e-5) -> Tensor:
    """Multi-resolution STFT log-magnitude distance: mean over resolutions of mean |ln(|P| + f) - ln(|R| + f)|.

    `pred`, `ref`: `(..., samples)` waveforms of one length; every leading index (e.g. each ear) is compared on
    its own. Returns a scalar tensor (natural-log units; 0 = identical magnitudes).
    """
    if pred.shape != ref.shape:
        raise ValueError(f"stft_log_distance: shapes differ {tuple(pred.shape)} vs {tuple(ref.shape)}")
    p, r = pred.reshape(-1, pred.shape[-1]).float(), ref.reshape(-1, ref.shape[-1]).float()
    total = []
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=p.device)
        mag = [torch.stft(x, n_fft, hop, window=window, return_complex=True).abs() for x in (p, r)]
        total.append((torch.log(mag[0] + floor) - torch.log(mag[1] + floor)).abs().mean())
    return torch.stack(total).mean()
