"""The flow API's input checks: loss shapes, solver tolerances, guidance intervals, clean/t_start pairing, fusion
alignment names. Each is a one-line error before any work (no broadcast, no endless loop, nothing ignored)."""

from __future__ import annotations

import math

import pytest
import torch
from test_flow import ToyAV

from avflow.errors import ConfigError
from avflow.flow import GuidanceBranch, cfg, flow_matching_loss, integrate, noised_streams, sample
from avflow.flow.solvers import dopri5
from avflow.nn.fusion import build_fusion, check_fusion


def _toy() -> ToyAV:
    torch.manual_seed(0)
    return ToyAV().double()


def _streams() -> dict:
    """Noise for ToyAV: audio (2, 8, 4), video (2, 3, 4, 2, 2)."""
    g = torch.Generator().manual_seed(1)
    return {"audio": torch.randn(2, 8, 4, generator=g, dtype=torch.float64),
            "video": torch.randn(2, 3, 4, 2, 2, generator=g, dtype=torch.float64)}  # fmt: skip


COND = {"text": torch.zeros(2, 5, dtype=torch.float64)}


# ---------------------------------------------------------------- 1. loss and training inputs


@pytest.mark.parametrize("shape", [(8, 4), (2, 8, 1), (1, 8, 4), (3, 8, 4)])
def test_loss_target_must_have_pred_shape(shape):
    with pytest.raises(ValueError, match=r"target must have the shape of pred, \(2, 8, 4\)"):
        flow_matching_loss(torch.randn(2, 8, 4), torch.randn(*shape))


def test_loss_mask_and_weight_still_broadcast():
    pred, target = torch.zeros(2, 4, 3), torch.ones(2, 4, 3)
    mask, weight = torch.ones(2, 4, 1, dtype=torch.bool), torch.full((2, 1, 1), 3.0)
    torch.testing.assert_close(flow_matching_loss(pred, target, mask, weight), torch.ones(2))


def test_noised_streams_noise_must_have_data_shape():
    x1 = {"audio": torch.randn(4, 8, 4)}
    with pytest.raises(ValueError, match=r"noise\['audio'\] must have the shape of x1\['audio'\], \(4, 8, 4\)"):
        noised_streams(x1, {"audio": torch.rand(4)}, {"audio": torch.randn(1, 8, 4)})


def test_noised_streams_times_must_have_data_batch():
    x1 = {"audio": torch.randn(4, 8, 4)}
    with pytest.raises(ValueError, match=r"t\['audio'\] must be \(4,\) or \(4, T\)"):
        noised_streams(x1, {"audio": torch.rand(1)}, {"audio": torch.randn(4, 8, 4)})
    with pytest.raises(ValueError, match="noise has no stream 'audio'"):
        noised_streams(x1, {"audio": torch.rand(4)}, {"video": torch.randn(4, 8, 4)})


# ---------------------------------------------------------------- 2. dopri5 tolerances


@pytest.mark.parametrize(
    "rtol, atol, match",
    [(0.0, 0.0, "both 0"), (-1e-5, 1e-5, "rtol must be"), (1e-5, -1.0, "atol must be"),
     (math.nan, 1e-5, "rtol must be"), (1e-5, math.inf, "atol must be")],
)  # fmt: skip
def test_sample_rejects_bad_tolerances_before_any_step(rtol, atol, match):
    model = _toy()
    with pytest.raises(ConfigError, match=match):
        sample(model, _streams(), COND, solver="dopri5", rtol=rtol, atol=atol)
    assert model.calls == []


def test_dopri5_rejects_zero_tolerances_itself():
    calls = []
    f = lambda x, t: calls.append(t) or {"x": -x["x"]}
    with pytest.raises(ConfigError, match="both 0"):
        integrate(f, {"x": torch.ones(3, dtype=torch.float64)}, solver="dopri5", rtol=0.0, atol=0.0)
    assert calls == []


def test_dopri5_step_underflow_is_an_error_not_a_hang():
    g = torch.Generator().manual_seed(0)
    noisy = lambda x, t: {"x": torch.randn(4, generator=g, dtype=torch.float64)}  # never smooth: no step passes
    with pytest.raises(ConfigError, match="step size underflowed"):
        dopri5(noisy, {"x": torch.zeros(4, dtype=torch.float64)}, rtol=1e-300, atol=1e-300)


def test_dopri5_non_finite_velocity_is_an_error_not_a_hang():
    with pytest.raises(ConfigError, match="diverged"):
        dopri5(lambda x, t: {"x": x["x"] * math.nan}, {"x": torch.ones(2, dtype=torch.float64)})


def test_dopri5_evaluation_cap():
    calls = []
    f = lambda x, t: calls.append(t) or {"x": math.cos(20 * t) * x["x"]}
    with pytest.raises(ConfigError, match="50 velocity evaluations"):
        dopri5(f, {"x": torch.ones(2, dtype=torch.float64)}, rtol=1e-12, atol=1e-12, max_evaluations=50)
    assert len(calls) <= 50


# ---------------------------------------------------------------- 3. guidance intervals


@pytest.mark.parametrize("t_range", [(0.9, 0.1), 0.5, (0.1,), (-0.1, 0.5), (0.2, 1.5), ("a", 1.0), (0.1, math.nan)])
def test_guidance_t_range_is_checked_when_built(t_range):
    with pytest.raises(ConfigError, match="t_range must be a pair"):
        cfg(5.0, t_range=t_range)
    with pytest.raises(ConfigError, match="t_range must be a pair"):
        GuidanceBranch(cfg_strength=2.0, t_range=t_range)


def test_guidance_t_range_accepts_ordered_pairs():
    for t_range in [(0.1, 0.9), (0.5, 0.5), (0, 1), [0.0, 0.3], None]:
        assert GuidanceBranch(cfg_strength=2.0, t_range=t_range).t_range == t_range


# ---------------------------------------------------------------- 4. clean without t_start, batch sizes


def test_clean_without_t_start_is_an_error():
    model, noise = _toy(), _streams()
    with pytest.raises(ConfigError, match="clean gives 'audio' but t_start does not"):
        sample(model, noise, COND, steps=2, clean={"audio": torch.ones_like(noise["audio"])})
    with pytest.raises(ConfigError, match="clean gives 'video' but t_start does not"):
        sample(model, noise, COND, steps=2, clean=noise, t_start={"audio": torch.ones(2, dtype=torch.float64)})
    assert model.calls == []


def test_clean_with_t_start_still_samples():
    noise = _streams()
    t_start = {"audio": torch.ones(2, dtype=torch.float64)}
    out = sample(_toy(), noise, COND, steps=2, clean={"audio": noise["audio"] * 0 + 1}, t_start=t_start)
    assert torch.equal(out.streams["audio"], torch.ones_like(noise["audio"]))


def test_noise_streams_must_share_one_batch_size():
    noise = _streams()
    noise["video"] = noise["video"][:1].expand(3, -1, -1, -1, -1).clone()
    model = _toy()
    with pytest.raises(ConfigError, match="share one batch size, got audio 2, video 3"):
        sample(model, noise, COND, steps=2)
    assert model.calls == []


# ---------------------------------------------------------------- 5. fusion alignment names


@pytest.mark.parametrize("fusion", ["full_attention", "windowed_aligners"])
def test_build_fusion_takes_an_alignment_name(fusion):
    module = build_fusion(fusion, 32, 16, 2, 2, alignment="avsync")
    assert module.alignment.name == "avsync"


def test_build_fusion_alignment_name_checked_like_objects():
    with pytest.raises(ConfigError, match="no temporal RoPE"):
        build_fusion("bidirectional", 32, 16, 2, 2, alignment="avsync")
    with pytest.raises(ConfigError, match="unknown temporal alignment 'avsyncc'"):
        build_fusion("full_attention", 32, 16, 2, 2, alignment="avsyncc")


def test_check_fusion_rejects_a_misspelt_alignment():
    with pytest.raises(ConfigError, match=r"unknown temporal alignment 'avsyncc' \(choose from none, avsync"):
        check_fusion("full_attention", None, "avsyncc", video_dim=32, audio_dim=16, n_layers=2)
    check_fusion("full_attention", None, "avsync", video_dim=32, audio_dim=16, n_layers=2)


def test_fixed_step_solvers_take_no_tolerances():
    out = sample(_toy(), _streams(), COND, steps=2, solver="euler", rtol=0.0, atol=0.0)
    assert out.nfe == 2


@pytest.mark.parametrize("sizes", [(0, 16, 2, 2), (32, -16, 2, 2), (32, 16, 0, 2), (32, 16, 2, -1), (32.0, 16, 2, 2)])
def test_build_fusion_refuses_sizes_that_are_not_positive_integers(sizes):
    # before: zero widths and zero or negative block counts built a module (with a zero-element warning at most)
    with pytest.raises(ConfigError, match="positive integers"):
        build_fusion("bidirectional", *sizes)
