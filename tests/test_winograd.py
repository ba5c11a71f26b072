"""Winograd F(4, 3) token convolutions: against the direct convolution in float64, cached and per-call weights, and
the `winograd_convolutions` scope of the MMAudio blocks (on only inside it, only at float32 CPU inference, and with
`measured` only on shapes where it measured faster)."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from avflow.nn import mmaudio_blocks, winograd
from avflow.nn.mmaudio_blocks import ChannelLastConv1d, ConvMLP, winograd_convolutions


def direct64(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    b = None if bias is None else bias.double()
    return F.conv1d(x.double().transpose(1, 2), weight.double(), b, padding=1).transpose(1, 2)


@pytest.mark.parametrize(("batch", "n", "c_in", "c_out"), [(2, 50, 24, 40), (1, 7, 16, 9), (3, 1, 8, 8), (1, 4, 5, 3)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv3_matches_the_direct_convolution(batch, n, c_in, c_out, with_bias):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(batch, n, c_in, generator=gen)
    weight = torch.randn(c_out, c_in, 3, generator=gen) / (3 * c_in) ** 0.5
    bias = torch.randn(c_out, generator=gen) if with_bias else None
    expected = direct64(x, weight, bias)
    per_call = winograd.conv3(x, weight, bias)
    cached = winograd.conv3(x, weight, bias, winograd.transform_weight(weight))
    assert per_call.shape == (batch, n, c_out)
    torch.testing.assert_close(per_call.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached, per_call, atol=1e-6, rtol=1e-6)


def test_weight_blocks_give_the_same_products():
    """Weights transformed block by block (output channels) multiply like the whole transformed weight."""
    gen = torch.Generator().manual_seed(0)
    v = winograd.transform_input(torch.randn(2, 13, 6, generator=gen))
    weight = torch.randn(11, 6, 3, generator=gen)
    whole = winograd.products(v, weight, winograd.transform_weight(weight))
    torch.testing.assert_close(winograd.products(v, weight, None, block=4), whole, atol=1e-6, rtol=1e-6)


def tiny_mlp(seed: int = 0) -> ConvMLP:
    mlp = ConvMLP(12, 40, multiple_of=8, kernel_size=3, padding=1)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mlp.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return mlp


@pytest.mark.parametrize("max_cache_bytes", [1 << 30, 0])  # cached, and transformed at every call
def test_scope_runs_winograd_inside_only(max_cache_bytes):
    mlp = tiny_mlp()
    x = torch.randn(2, 21, 12)
    with torch.no_grad():
        direct = mlp(x)
        with winograd_convolutions(mlp, max_cache_bytes=max_cache_bytes, measured=False):
            assert all(c.winograd for c in (mlp.w1, mlp.w2, mlp.w3))
            assert mlp.w1.winograd_weight is None  # transformed at the first call, not before
            fast = mlp(x)
            assert (mlp.w1.winograd_weight is not None) == (max_cache_bytes > 0)
        assert not mlp.w1.winograd and mlp.w1.winograd_weight is None  # restored on exit
        assert torch.equal(mlp(x), direct)
    assert not torch.equal(fast, direct)  # another algorithm ran ...
    torch.testing.assert_close(fast, direct, atol=1e-5, rtol=1e-5)  # ... to float32 rounding


def test_scope_leaves_training_and_other_convolutions_alone():
    mlp = tiny_mlp()
    wide = ChannelLastConv1d(12, 12, kernel_size=7, padding=3)
    x = torch.randn(1, 9, 12)
    direct = mlp(x)
    with winograd_convolutions(torch.nn.ModuleList([mlp, wide]), measured=False):
        assert not wide.winograd  # only kernel-3 'same' convolutions
        assert torch.equal(mlp(x), direct)  # gradients on: the direct convolution
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert not mlp.w1.use_winograd(x)  # lower precision: the direct convolution
    with torch.autocast("cpu", dtype=torch.bfloat16), winograd_convolutions(mlp):
        assert not mlp.w1.winograd and mlp.w1.winograd_weight is None  # nothing cached for nothing


def test_direct_is_the_module_convolution():
    conv = ChannelLastConv1d(6, 5, kernel_size=3, padding=1)
    x = torch.randn(2, 11, 6)
    torch.testing.assert_close(winograd.direct(x, conv.weight, conv.bias), conv(x), atol=0, rtol=0)


@pytest.mark.parametrize("verdict", [False, True])
def test_measured_scope_follows_the_recorded_verdict(monkeypatch, verdict):
    """With `measured`, a shape's convolutions run the way its verdict says; Winograd is timed once per shape."""
    monkeypatch.setattr(mmaudio_blocks, "WINOGRAD_PAYS_OFF", {})
    timed = []

    def fake_pays_off(x, weight, transformed):
        timed.append((tuple(x.shape), tuple(weight.shape)))
        return verdict

    monkeypatch.setattr(winograd, "pays_off", fake_pays_off)
    mlp = tiny_mlp()
    x = torch.randn(2, 21, 12)
    with torch.no_grad():
        direct = mlp(x)
        with winograd_convolutions(mlp):
            first, second = mlp(x), mlp(x)
            cached = mlp.w1.winograd_weight is not None
    # w1 and w3 share a shape: two verdicts (12 -> hidden, hidden -> 12), each timed once, not again
    hidden = mlp.w2.weight.shape[1]
    assert sorted(timed) == [((2, 21, 12), tuple(mlp.w1.weight.shape)), ((2, 21, hidden), tuple(mlp.w2.weight.shape))]
    assert torch.equal(first, second)
    assert cached == verdict  # a shape that runs direct keeps no transformed weight
    if verdict:
        assert not torch.equal(first, direct)
        torch.testing.assert_close(first, direct, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(first, direct)


def test_cached_and_uncached_convolutions_of_one_shape_are_timed_apart(monkeypatch):
    """Over the cache budget a convolution transforms its weight at every call, which may not pay where the cached
    one does: its verdict is its own (here: cached pays, uncached does not)."""
    monkeypatch.setattr(mmaudio_blocks, "WINOGRAD_PAYS_OFF", {})
    timed = []

    def fake_pays_off(x, weight, transformed):
        timed.append(transformed is not None)
        return transformed is not None

    monkeypatch.setattr(winograd, "pays_off", fake_pays_off)
    mlp = tiny_mlp()
    x = torch.randn(2, 21, 12)
    budget = 2 * mlp.w1.weight.numel() * mlp.w1.weight.element_size()  # room for w1's transformed weight only
    with torch.no_grad():
        direct_w3 = mlp.w3(x)
        with winograd_convolutions(mlp, max_cache_bytes=budget):
            assert mlp.w1.winograd_cached and not mlp.w3.winograd_cached  # w1 and w3 share a shape
            got_w1, got_w3 = mlp.w1(x), mlp.w3(x)
            mlp.w1(x), mlp.w3(x)  # the verdicts are kept: no more timing
    assert timed == [True, False]
    assert torch.equal(got_w3, direct_w3)  # the uncached one runs direct
    torch.testing.assert_close(got_w1, winograd.direct(x, mlp.w1.weight, mlp.w1.bias), atol=1e-5, rtol=1e-5)


def test_measured_scope_runs_direct_under_deterministic_algorithms(monkeypatch):
    """A timing must not decide a deterministic run's bits: no timing, the direct convolution's exact output."""
    monkeypatch.setattr(mmaudio_blocks, "WINOGRAD_PAYS_OFF", {})
    monkeypatch.setattr(winograd, "pays_off", lambda *a, **k: pytest.fail("timed under deterministic algorithms"))
    mlp = tiny_mlp()
    x = torch.randn(2, 21, 12)
    with torch.no_grad():
        direct = mlp(x)
        torch.use_deterministic_algorithms(True)
        try:
            with winograd_convolutions(mlp):
                got = mlp(x)
            with winograd_convolutions(mlp, measured=False):  # asked for always: still Winograd
                always = mlp(x)
        finally:
            torch.use_deterministic_algorithms(False)
    assert torch.equal(got, direct)
    assert not torch.equal(always, direct)


@pytest.mark.parametrize("slow", ["conv3", "direct"])
def test_pays_off_picks_the_faster_way(monkeypatch, slow):
    """A way made 20 ms slower loses the comparison (the real kernels take well under a millisecond here)."""
    real = getattr(winograd, slow)

    def delayed(*args, **kwargs):
        time.sleep(0.02)
        return real(*args, **kwargs)

    monkeypatch.setattr(winograd, slow, delayed)
    x, weight = torch.randn(1, 8, 4), torch.randn(4, 4, 3)
    assert winograd.pays_off(x, weight, None, repeats=2) == (slow == "direct")
