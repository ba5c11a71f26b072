"""Long-kernel 1D convolutions by overlap-save FFT: a channel product per frequency bin instead of one per tap.

A 'same'-padded correlation y[o, t] = sum_{c, j} w[o, c, j] x[c, t + d (j - p)] (kernel k, dilation d, p = (k - 1) / 2)
is cut into blocks of L = n_fft - k + 1 outputs. With dilation d the input splits into d phases x_r[m] = x[r + d m],
each an undilated convolution. Per block, the n_fft inputs it reads are taken to the frequency domain, and since
the DFT of a correlation is conj(W) * S, each of the n_fft / 2 + 1 bins f is one complex channel product
Y_f (blocks, C_out) = S_f (blocks, C_in) @ conj(W_f) (C_in, C_out); an inverse DFT gives the L outputs.

Per output and channel pair that is 4 (n_fft / 2 + 1) / L real multiplications against k for the direct convolution:
with n_fft = 32, 3.1 instead of 11 for k = 11 and 2.6 instead of 7 for k = 7 (BigVGAN 16 kHz on 8 s of audio: 302
instead of 919 GFLOP, the small DFTs included). The transforms are exact up to rounding (float32: about 1e-6
relative, tests/test_fft_conv.py). Every transform is a small real matrix product (the DFT of the blocks, of the
taps, and the inverse), so the layouts stay channel-last and no FFT library is needed. Fewer multiplications are not
always less time: the weight is transformed at every call (bins x C_in x C_out values, made a slice of input channels
at a time so that it is used while in cache), and few channels or short signals leave thin products, so `pays_off`
says where it measured faster (`benchmarks/vocoder_convs.py`, docs/foley.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

N_FFT = 32  # block FFT size: 22 outputs per block for k = 11, 26 for k = 7
CHANNELS_PER_PASS = 64  # input channels whose transformed weights are made and used together (a few MB)
# (kernel size, fewest channels, fewest channels x samples) where it measured faster than the direct convolution on
# a 2-core AMD EPYC with 2 threads (`benchmarks/vocoder_convs.py`, docs/foley.md): few channels leave the products
# too thin, and short signals do not pay for the weight transform made at every call.
PAYS_OFF = ((11, 192, 768_000), (7, 192, 1_536_000))


def pays_off(channels: int, length: int, kernel_size: int) -> bool:
    """Whether a C -> C convolution of this kernel over `length` samples is in the measured `PAYS_OFF` region."""
    return any(kernel_size == k and channels >= c and channels * length >= n for k, c, n in PAYS_OFF)


def dft_basis(kernel_size: int, n_fft: int) -> torch.Tensor:
    """(2 bins, k) float64: rows cos(2 pi f j / n_fft) for the bins f, then sin(...): the real and imaginary parts of
    the conjugate DFT of taps j (bins = n_fft / 2 + 1)."""
    j = torch.arange(kernel_size, dtype=torch.float64)[None, :]
    f = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * f * j / n_fft
    return torch.cat([angle.cos(), angle.sin()])


def forward_basis(n_fft: int) -> torch.Tensor:
    """(2 bins, n_fft) float64: the real DFT's cos rows then -sin rows (S_f = sum_n s[n] e^{-2 pi i f n / n_fft})."""
    basis, bins = dft_basis(n_fft, n_fft), n_fft // 2 + 1
    return torch.cat([basis[:bins], -basis[bins:]])


def inverse_basis(n_fft: int, outputs: int) -> torch.Tensor:
    """(outputs, 2 bins) float64: the first `outputs` samples of the inverse real DFT from (real, imaginary) bins;
    bins 0 and n_fft / 2 count once, the others twice (their conjugate twins), and imaginary parts of those two do
    not count."""
    bins = n_fft // 2 + 1
    basis = dft_basis(outputs, n_fft).T  # (outputs, 2 bins): cos | sin
    weight = torch.full((bins,), 2.0, dtype=torch.float64)
    weight[0] = weight[-1] = 1.0
    basis = basis * torch.cat([weight, -weight]) / n_fft  # Re(Y e^{+i a}) = Y_re cos a - Y_im sin a
    basis[:, bins] = basis[:, -1] = 0.0
    return basis


def block_length(kernel_size: int, n_fft: int) -> int:
    """Outputs per block, L = n_fft - k + 1."""
    if n_fft < kernel_size + 1:
        raise ValueError(f"n_fft {n_fft} must exceed the kernel size {kernel_size}")
    return n_fft - kernel_size + 1


def conv1d_tokens(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int, n_fft: int
) -> torch.Tensor:
    """Same as F.conv1d(x.transpose(1, 2), weight, bias, padding=d (k - 1) / 2, dilation=d).transpose(1, 2) for
    channel-last x (B, T, C_in) -> (B, T, C_out), contiguous; odd k only. Every transform is a real matrix product."""
    batch, length, channels = x.shape
    c_out, c_in, k = weight.shape
    if k % 2 == 0 or c_in != channels:
        raise ValueError(f"need an odd kernel over {channels} channels, got weight {tuple(weight.shape)}")
    pad, block, bins = (k - 1) // 2, block_length(k, n_fft), n_fft // 2 + 1
    phase_length = -(-length // dilation)  # samples per dilation phase
    blocks = -(-phase_length // block)
    if dilation > 1:  # (B, T, C) -> (B d, T / d, C): phase r holds x[r], x[r + d], ...
        x = F.pad(x, (0, 0, 0, phase_length * dilation - length))
        x = x.view(batch, phase_length, dilation, channels).transpose(1, 2).reshape(-1, phase_length, channels)
    x = F.pad(x, (0, 0, pad, blocks * block + k - 1 - pad - phase_length))  # (B d, blocks L + k - 1, C)
    rows = x.shape[0] * blocks
    windows = x.unfold(1, n_fft, block).permute(3, 0, 1, 2).reshape(n_fft, rows * channels)  # (n_fft, R C)
    spectrum = (forward_basis(n_fft).to(x) @ windows).view(2, bins, rows, channels)  # (re | im, bins, R, C)
    products = torch.empty(2, bins, rows, c_out, dtype=x.dtype, device=x.device)
    basis = dft_basis(k, n_fft).to(x)  # (2 bins, k)
    taps = weight.permute(2, 1, 0).reshape(k, c_in * c_out)  # (k, C_in C_out)
    for start in range(0, c_in, CHANNELS_PER_PASS):  # the weight read once, transformed a slice at a time (in cache)
        c = slice(start, min(start + CHANNELS_PER_PASS, c_in))
        w_re, w_im = (basis @ taps[:, c.start * c_out : c.stop * c_out]).view(2, bins, -1, c_out)  # conj(W_f)
        s_re, s_im = spectrum[..., c]  # (bins, R, slice)
        beta = 0.0 if start == 0 else 1.0  # the first slice overwrites (products start uninitialised)
        products[0].baddbmm_(s_re, w_re, beta=beta).baddbmm_(s_im, w_im, alpha=-1)  # re += S_re W_re - S_im W_im
        products[1].baddbmm_(s_re, w_im, beta=beta).baddbmm_(s_im, w_re)  # im += S_re W_im + S_im W_re
    y = inverse_basis(n_fft, block).to(x) @ products.view(2 * bins, rows * c_out)  # (L, R C_out)
    y = y.view(block, -1, blocks, c_out).permute(1, 2, 0, 3).reshape(-1, blocks * block, c_out)[:, :phase_length]
    if dilation > 1:  # back to (B, T, C_out)
        y = y.reshape(batch, dilation, phase_length, c_out).transpose(1, 2).reshape(batch, -1, c_out)[:, :length]
    y = y.contiguous()
    return y if bias is None else y.add_(bias)
