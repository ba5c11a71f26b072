"""BigVGAN's anti-aliased snake as one function of slices, for torch.compile to fuse into one kernel.

The eager path (`bigvgan_blocks.AntiAliasedActivation`) runs four depthwise 7-tap filters with the snake between
them: memory-bound passes over the signal that take about a third of a CPU vocoder call once its long convolutions
run by FFT. Written with slices, inductor turns the whole activation into one loop over the signal:

    u_r[m] = sum_k g_r[k] x[m + k]                       x replicate-padded by 3 (r = 0, 1: the two output phases)
    s_r    = u_r + sin^2(a u_r) / b                      the snake on each phase
    y[m]   = sum_k f_0[k] s_0[m + k] + f_1[k] s_1[m + k]  s_r padded by 3 with s_0's first and s_1's last sample

(`UpSample.phase_taps` gives g, `DownSample.phase_taps` f, `Snake.coefficients` a and 1 / b.) The same numbers as
the eager path to float32 rounding; compiling needs a C++ compiler (`compiler_missing`).
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable

import torch

PAD = 3  # the polyphase filters' half width: 7 taps


def pad_rows(rows: torch.Tensor, first: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """(B, T, C) with PAD copies of `first` / `last` (B, 1, C) before / after: (B, T + 2 PAD, C)."""
    b, _, c = rows.shape
    return torch.cat([first.expand(b, PAD, c), rows, last.expand(b, PAD, c)], dim=1)


def anti_aliased_snake(
    frames: torch.Tensor,
    alpha: torch.Tensor,
    inverse_beta: torch.Tensor,
    up_taps: tuple[torch.Tensor, torch.Tensor],
    down_taps: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """Frames (B, C, 1, T) channels-last -> frames (B, C, 1, T) channels-last; alpha, inverse_beta (C,); each tap
    tensor (7,)."""
    t = frames.shape[-1]
    rows = frames.permute(0, 2, 3, 1)[:, 0]  # (B, T, C), a view of the channels-last memory
    padded = pad_rows(rows, rows[:, :1], rows[:, -1:])  # (B, T + 6, C)
    phases = []
    for taps in up_taps:
        u = sum(taps[k] * padded[:, k : k + t] for k in range(2 * PAD + 1))  # (B, T, C)
        phases.append(u + inverse_beta * torch.sin(u * alpha) ** 2)
    first, last = phases[0][:, :1], phases[1][:, -1:]
    s0, s1 = (pad_rows(s, first, last) for s in phases)  # (B, T + 6, C) each
    y = sum(down_taps[0][k] * s0[:, k : k + t] + down_taps[1][k] * s1[:, k : k + t] for k in range(2 * PAD + 1))
    return y.unsqueeze(1).permute(0, 3, 1, 2)  # (B, C, 1, T), channels-last


@functools.cache
def compiled_anti_aliased_snake() -> Callable[..., torch.Tensor]:
    """`anti_aliased_snake` under torch.compile, dynamic in every size (one kernel for every level and length).
    Compiled at its first call (about 8 s on a 2-core CPU; a later process reads inductor's disk cache, about 2 s)."""
    return torch.compile(anti_aliased_snake, dynamic=True)


def compiler_missing() -> str | None:
    """Why torch.compile cannot build CPU kernels here, or None: inductor runs `$CXX`, else g++ (clang++ on macOS)."""
    name = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    if shutil.which(name):
        return None
    source = "$CXX" if os.environ.get("CXX") else "the C++ compiler torch.compile uses"
    return f"{source} ({name}) is not an executable on PATH: install it or point $CXX at one"
