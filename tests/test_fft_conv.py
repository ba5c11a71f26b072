"""Overlap-save FFT convolutions (avflow.nn.fft_conv) against the direct convolution, and the vocoder's use of them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from avflow.codecs.bigvgan import BigVGAN, BigVGANConfig
from avflow.nn import fft_conv


def _direct64(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> torch.Tensor:
    """The direct 'same' convolution in float64 on channel-last x (B, T, C)."""
    k = weight.shape[-1]
    b = None if bias is None else bias.double()
    y = F.conv1d(x.double().transpose(1, 2), weight.double(), b, padding=dilation * (k - 1) // 2, dilation=dilation)
    return y.transpose(1, 2)


@pytest.mark.parametrize(
    "batch, length, c_in, c_out, k, dilation, n_fft",
    [
        (1, 100, 8, 8, 11, 1, 32),  # several blocks, last one partial
        (2, 97, 6, 10, 7, 3, 16),  # length not a multiple of the dilation, C_in != C_out
        (1, 53, 4, 4, 11, 5, 32),  # dilation span (51) about the length
        (3, 5, 5, 3, 3, 1, 8),  # shorter than one block
        (1, 300, 16, 16, 7, 1, 64),
    ],
)
def test_matches_the_direct_convolution(batch, length, c_in, c_out, k, dilation, n_fft):
    x = torch.randn(batch, length, c_in)
    weight, bias = torch.randn(c_out, c_in, k) / (c_in * k) ** 0.5, torch.randn(c_out)
    y = fft_conv.conv1d_tokens(x, weight, bias, dilation, n_fft)
    assert y.shape == (batch, length, c_out) and y.is_contiguous()
    truth = _direct64(x, weight, bias, dilation)
    assert (y.double() - truth).abs().max() < 1e-5 * truth.abs().max()  # float32 rounding, no approximation
    no_bias = fft_conv.conv1d_tokens(x, weight, None, dilation, n_fft)
    torch.testing.assert_close(no_bias + bias, y, atol=1e-5, rtol=1e-5)


def test_channel_slices_cover_every_input_channel(monkeypatch):
    """More input channels than one pass takes, in uneven slices: every channel still counts once."""
    monkeypatch.setattr(fft_conv, "CHANNELS_PER_PASS", 5)
    x, weight = torch.randn(1, 80, 12), torch.randn(3, 12, 7)
    truth = _direct64(x, weight, None, 2)
    assert (fft_conv.conv1d_tokens(x, weight, None, 2, 16).double() - truth).abs().max() < 1e-5 * truth.abs().max()


def test_refuses_even_kernels_and_short_ffts():
    with pytest.raises(ValueError, match="odd kernel"):
        fft_conv.conv1d_tokens(torch.randn(1, 10, 4), torch.randn(4, 4, 6), None, 1, 16)
    with pytest.raises(ValueError, match="must exceed"):
        fft_conv.conv1d_tokens(torch.randn(1, 10, 4), torch.randn(4, 4, 11), None, 1, 8)


def test_pays_off_reads_the_measured_table():
    k, channels, work = fft_conv.PAYS_OFF[0]
    length = -(-work // channels)
    assert fft_conv.pays_off(channels, length, k)
    assert not fft_conv.pays_off(channels - 1, 10 * length, k) and not fft_conv.pays_off(channels, length - 1, k)
    assert not fft_conv.pays_off(10**4, 10**6, 3)  # kernel 3 never measured faster


def _tiny_vocoder(fixtures):
    root = fixtures / "bigvgan" / "bigvgan_v1_tiny"
    config = BigVGANConfig.from_dict(json.loads(root.with_suffix(".json").read_text())["constructor"])
    vocoder = BigVGAN(config).load_weights(load_file(root.with_suffix(".weights.safetensors"))).eval()
    return vocoder, load_file(root.with_suffix(".io.safetensors"))


def test_vocoder_by_fft_matches_the_reference(fixtures, monkeypatch):
    """Every residual-block convolution of the fixture vocoder forced onto the FFT path: the reference's waveform."""
    vocoder, io = _tiny_vocoder(fixtures)
    taken = []
    monkeypatch.setattr(fft_conv, "pays_off", lambda c, t, k: taken.append(k) or True)
    with torch.inference_mode():
        waveform = vocoder(io["mel"])
    assert set(taken) == set(vocoder.config.resblock_kernel_sizes)
    torch.testing.assert_close(waveform, io["waveform"], atol=1e-4, rtol=1e-4)


def test_no_fft_while_training_or_deterministic(fixtures, monkeypatch):
    vocoder, io = _tiny_vocoder(fixtures)
    monkeypatch.setattr(fft_conv, "pays_off", lambda *a: pytest.fail("FFT path considered"))
    vocoder(io["mel"][..., :4])  # grad enabled (training): the direct convolution, the path whose speed was measured
    try:
        torch.use_deterministic_algorithms(True)
        with torch.inference_mode():
            vocoder(io["mel"][..., :4])
    finally:
        torch.use_deterministic_algorithms(False)
