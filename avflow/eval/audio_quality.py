"""Waveform quality measures for codecs and generators (no learned model)."""

from __future__ import annotations

import torch
from torch import Tensor

STFT_RESOLUTIONS = ((256, 64), (512, 128), (1024, 256))  # (n_fft, hop), Hann windows of n_fft
RANGE_DB = 60.0  # magnitudes more than this below the reference's loudest bin count as equal (the noise floor)


def stft_log_distance(
    pred: Tensor, ref: Tensor, range_db: float | None = RANGE_DB, resolutions=STFT_RESOLUTIONS
) -> Tensor:
    """Multi-resolution STFT log-magnitude distance: mean over resolutions of mean |ln max(|P|, f) - ln max(|R|, f)|.

    `pred`, `ref`: `(..., samples)` waveforms of one length; every leading index (e.g. each ear) is compared on its
    own. The floor f is `range_db` below the reference's loudest bin (per signal and resolution), so a background
    noise that no codec can reproduce sample by sample (the world's ambience sits near -54 dBFS) does not dominate;
    `range_db=None` uses an absolute floor of 1e-5 instead. Returns a scalar tensor (natural-log units; 0 = equal).
    """
    if pred.shape != ref.shape:
        raise ValueError(f"stft_log_distance: shapes differ {tuple(pred.shape)} vs {tuple(ref.shape)}")
    p, r = pred.reshape(-1, pred.shape[-1]).float(), ref.reshape(-1, ref.shape[-1]).float()
    total = []
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=p.device)
        mp, mr = (torch.stft(x, n_fft, hop, window=window, return_complex=True).abs() for x in (p, r))
        if range_db is None:
            floor = torch.full((len(mr), 1, 1), 1e-5, device=mr.device)
        else:
            floor = mr.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12) * 10 ** (-range_db / 20)
        total.append((torch.log(torch.maximum(mp, floor)) - torch.log(torch.maximum(mr, floor))).abs().mean())
    return torch.stack(total).mean()
