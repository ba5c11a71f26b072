"""Flow matching core: solvers' orders, guidance, per-frame timesteps, loss and timestep distributions."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from avflow.errors import ConfigError
from avflow.flow import (
    PRESETS,
    SAMPLER_PRESETS,
    GuidanceBranch,
    SamplingConfig,
    TimestepSampler,
    cfg,
    flow_matching_loss,
    guided_velocity,
    integrate,
    interpolate,
    noised_streams,
    parse_stream_strengths,
    preset_branches,
    sample,
    sample_with,
    shift_time,
    time_grid,
    velocity_target,
)


class ToyAV(nn.Module):
    """A tiny generator with audio (B, N, C) and video (B, C, T, H, W) streams and a text condition."""

    def __init__(self, c_audio: int = 4, c_video: int = 3, d_text: int = 5):
        super().__init__()
        self.audio = nn.Linear(c_audio + d_text + 1, c_audio)
        self.video = nn.Linear(c_video + d_text + 1, c_video)
        self.a2v = nn.Linear(c_audio, c_video)
        self.v2a = nn.Linear(c_video, c_audio)
        self.d_text = d_text
        self.calls: list[tuple[int, bool]] = []

    def empty_conditions(self, batch: int) -> dict:
        return {"text": torch.zeros(batch, self.d_text, dtype=self.audio.weight.dtype)}

    def velocity(self, streams, t, cond, *, cross_modal: bool = True):
        a, v = streams["audio"], streams["video"]  # (B, N, Ca), (B, Cv, T, H, W)
        self.calls.append((a.shape[0], cross_modal))
        b, n = a.shape[:2]
        ta = t["audio"] if t["audio"].ndim == 2 else t["audio"][:, None].expand(b, n)
        vv = v.permute(0, 2, 3, 4, 1)  # (B, T, H, W, Cv)
        tv = t["video"] if t["video"].ndim == 2 else t["video"][:, None].expand(b, vv.shape[1])
        tv = tv[:, :, None, None, None].expand(*vv.shape[:-1], 1)
        txt = cond["text"]
        out_a = self.audio(torch.cat([a, txt[:, None].expand(b, n, -1), ta[..., None]], -1))
        out_v = self.video(torch.cat([vv, txt[:, None, None, None].expand(*vv.shape[:-1], -1), tv], -1))
        if cross_modal:
            out_a = out_a + self.v2a(vv.mean((1, 2, 3)))[:, None]
            out_v = out_v + self.a2v(a.mean(1))[:, None, None, None]
        return {"audio": torch.tanh(out_a), "video": torch.tanh(out_v).permute(0, 4, 1, 2, 3)}


def _toy(seed: int = 0) -> ToyAV:
    torch.manual_seed(seed)
    return ToyAV().double()


def _streams(b: int = 2, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "audio": torch.randn(b, 8, 4, generator=g, dtype=torch.float64),
        "video": torch.randn(b, 3, 4, 2, 2, generator=g, dtype=torch.float64),
    }


# ---------------------------------------------------------------- solvers


def _ode_error(solver: str, steps: int) -> float:
    # dx/dt = cos(2t) x + t, a non-autonomous linear ODE; reference from dopri5 at tight tolerance.
    f = lambda x, t: {"x": math.cos(2 * t) * x["x"] + t}
    x0 = {"x": torch.tensor([1.0, -0.5], dtype=torch.float64)}
    exact = integrate(f, x0, solver="dopri5", rtol=1e-12, atol=1e-12)["x"]
    got = integrate(f, x0, steps=steps, solver=solver)["x"]
    return float((got - exact).abs().max())


@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2), ("midpoint", 2)])
def test_fixed_step_solver_orders(solver: str, order: int):
    errs = [_ode_error(solver, n) for n in (16, 32, 64)]
    measured = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    # Euler's error halves when steps double (order 1); Heun's and midpoint's quarter (order 2).
    for m in measured:
        assert abs(m - order) < 0.15, f"{solver}: measured orders {measured}"


def test_dopri5_meets_tolerance_against_closed_form():
    # dx/dt = cos(t) x  =>  x(1) = x0 exp(sin 1)
    f = lambda x, t: {"x": math.cos(t) * x["x"]}
    x0 = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
    for tol in (1e-4, 1e-7):
        got = integrate(f, {"x": x0}, solver="dopri5", rtol=tol, atol=tol)["x"]
        exact = x0 * math.exp(math.sin(1.0))
        assert float((got - exact).abs().max()) < 10 * tol * float(exact.abs().max())


def test_time_grid_uniform_and_shifted():
    g = time_grid(4)
    assert torch.allclose(g, torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    gs = time_grid(10, shift=3.0)
    assert gs[0] == 0 and gs[-1] == 1 and bool((gs.diff() > 0).all())
    # a shift > 1 spends more steps near noise: the first half of the steps stays below t = 0.5
    assert float(gs[5]) < 0.5
    with pytest.raises(ValueError):
        time_grid(0)


def test_sampler_reports_nfe_per_solver():
    model = _toy()
    x = _streams()
    cond = {"text": torch.randn(2, 5, dtype=torch.float64)}
    assert sample(model, x, cond, steps=5, solver="euler").nfe == 5
    assert sample(model, x, cond, steps=5, solver="heun").nfe == 10
    assert sample(model, x, cond, steps=5, solver="midpoint").nfe == 10
    assert sample(model, x, cond, steps=5, solver="euler", guidance=cfg(3.0)).nfe == 10
    r = sample(model, x, cond, solver="dopri5", rtol=1e-4, atol=1e-4)
    assert r.nfe >= 7 and r.nfe % 1 == 0


# ---------------------------------------------------------------- guidance


def test_single_branch_is_plain_cfg():
    model = _toy()
    x = _streams()
    t = {"audio": torch.full((2,), 0.3, dtype=torch.float64), "video": torch.full((2,), 0.3, dtype=torch.float64)}
    cond = {"text": torch.randn(2, 5, dtype=torch.float64)}
    w = 4.5
    v, nfe = guided_velocity(model, x, t, cond, cfg(w))
    vc = model.velocity(x, t, cond)
    vu = model.velocity(x, t, model.empty_conditions(2))
    assert nfe == 2
    for s in v:
        torch.testing.assert_close(v[s], w * vc[s] + (1 - w) * vu[s], rtol=1e-12, atol=1e-12)


def test_multi_branch_formula_per_stream_scales_and_modality_aware():
    model = _toy()
    x = _streams()
    t = {"audio": torch.full((2,), 0.6, dtype=torch.float64), "video": torch.full((2,), 0.6, dtype=torch.float64)}
    cond = {"text": torch.randn(2, 5, dtype=torch.float64)}
    neg = {"text": torch.randn(2, 5, dtype=torch.float64)}
    branches = [
        GuidanceBranch(cond=neg, cfg_strength={"audio": 2.0, "video": 3.0}),
        GuidanceBranch(cond=None, cfg_strength=1.5, cross_modal=False),  # modality-aware branch
    ]
    v, nfe = guided_velocity(model, x, t, cond, branches)
    vc = model.velocity(x, t, cond)
    vn = model.velocity(x, t, neg)
    vm = model.velocity(x, t, model.empty_conditions(2), cross_modal=False)
    assert nfe == 3
    for s, w in (("audio", 2.0), ("video", 3.0)):
        expected = vc[s] + (w - 1) * (vc[s] - vn[s]) + 0.5 * (vc[s] - vm[s])
        torch.testing.assert_close(v[s], expected, rtol=1e-12, atol=1e-12)


def test_branch_interval_switches_exactly_where_stated():
    model = _toy()
    x = _streams()
    cond = {"text": torch.randn(2, 5, dtype=torch.float64)}
    branch = GuidanceBranch(cfg_strength=2.0, t_range=(0.25, 0.5))
    # Euler on a grid of 8 steps evaluates at 0, 1/8, ..., 7/8: the branch is active at 0.25, 0.375, 0.5 only.
    model.calls.clear()
    r = sample(model, x, cond, steps=8, guidance=[branch], batched=False)
    assert r.nfe == 8 + 3
    assert len(model.calls) == 11
    for tau, expect in ((0.2499, False), (0.25, True), (0.5, True), (0.5001, False)):
        assert branch.active(tau) is expect
    # with a branch active everywhere the NFE doubles
    assert sample(model, x, cond, steps=8, guidance=[GuidanceBranch(cfg_strength=2.0)]).nfe == 16


def test_guidance_presets_are_data():
    """Each preset's branches: plain = empty conditions at w; modality = cross-modal off; strength 1 = dropped."""
    model = _toy()
    x = _streams()
    t = {"audio": torch.full((2,), 0.4, dtype=torch.float64), "video": torch.full((2,), 0.4, dtype=torch.float64)}
    cond = {"text": torch.randn(2, 5, dtype=torch.float64)}
    vc = model.velocity(x, t, cond)
    vu = model.velocity(x, t, model.empty_conditions(2))
    vm = model.velocity(x, t, model.empty_conditions(2), cross_modal=False)
    expected = {
        "none": lambda s: vc[s],
        "plain": lambda s: vc[s] + 2.0 * (vc[s] - vu[s]),
        "modality": lambda s: vc[s] + 2.0 * (vc[s] - vm[s]),
        "modality_text": lambda s: vc[s] + 0.5 * (vc[s] - vu[s]) + 2.0 * (vc[s] - vm[s]),
    }
    assert set(PRESETS) == set(expected)
    for name, formula in expected.items():
        branches = preset_branches(name, cfg_strength=3.0, text_cfg_strength=1.5)
        assert len(branches) == len(PRESETS[name])
        v, nfe = guided_velocity(model, x, t, cond, branches)
        assert nfe == 1 + len(PRESETS[name])
        for s in v:
            torch.testing.assert_close(v[s], formula(s), rtol=1e-12, atol=1e-12)
    assert preset_branches("plain", cfg_strength=1.0) == []  # 1 = off: no extra model evaluation
    assert len(preset_branches("modality_text", cfg_strength=3.0, text_cfg_strength=1.0)) == 1


def test_sampling_config_is_validated_once_in_one_line():
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="cfg_strength must be a finite number > 0") as err:
            SamplingConfig(cfg_strength=bad)
        assert "\n" not in str(err.value)
    for field, value, message in (
        ("steps", 0, "steps must be an integer >= 1"),
        ("solver", "rk9", "unknown solver 'rk9'"),
        ("shift", 0.5, "shift must be a finite number >= 1"),
        ("guidance", "strong", "unknown guidance preset 'strong'"),
        ("text_cfg_strength", float("nan"), "text_cfg_strength must be"),
    ):
        with pytest.raises(ConfigError, match=message):
            SamplingConfig(cfg_strength=2.0, **{field: value})
    base = SamplingConfig(cfg_strength=2.0, steps=10)
    assert base.override(steps=None, cfg_strength=3.0) == SamplingConfig(cfg_strength=3.0, steps=10)
    with pytest.raises(ConfigError, match="cfg_strength"):
        base.override(cfg_strength=0.0)
    with pytest.raises(ConfigError, match="unknown sampling settings"):
        base.override(cfg=2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.steps = 3
    with pytest.raises(TypeError):
        SamplingConfig(2.0)  # keyword-only


def test_stream_cfg_strength_guides_each_stream_at_its_own_strength():
    """One Euler step from t = 0: each stream moves as plain CFG at its own strength would move it."""
    model = _toy()
    x = _streams()
    cond = {"text": torch.randn(2, 5, dtype=torch.float64)}
    per_stream = SamplingConfig(cfg_strength=3.0, steps=1, stream_cfg_strength={"video": 5.0})
    out = sample_with(per_stream, model, x, cond).streams
    at_3 = sample_with(SamplingConfig(cfg_strength=3.0, steps=1), model, x, cond).streams
    at_5 = sample_with(SamplingConfig(cfg_strength=5.0, steps=1), model, x, cond).streams
    torch.testing.assert_close(out["audio"], at_3["audio"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["video"], at_5["video"], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(at_3["video"], at_5["video"])  # the strengths do differ on this model
    # the modality-aware preset takes the per-stream strength for its main (cross-modal off) branch too
    (branch,) = SamplingConfig(cfg_strength=3.0, guidance="modality", stream_cfg_strength={"audio": 2.0}).branches(
        streams=["audio", "video"]
    )
    assert branch.cross_modal is False and branch.cfg_strength == {"audio": 2.0, "video": 3.0}
    # the command line's strengths add to the model's own
    merged = per_stream.with_stream_cfg({"audio": 2.0})
    assert merged.stream_cfg_strength == {"video": 5.0, "audio": 2.0}
    assert per_stream.stream_cfg_strength == {"video": 5.0}
    # guided as soon as any stream is guided; no branch at all when every stream is at 1
    assert SamplingConfig(cfg_strength=1.0, stream_cfg_strength={"video": 2.0}).guided
    assert SamplingConfig(cfg_strength=1.0, stream_cfg_strength={"video": 1.0}).branches(streams=["video"]) == []


def test_stream_cfg_strength_errors_are_one_line():
    for bad, message in (
        ({"video": 0.0}, "stream_cfg_strength.video must be a finite number > 0"),
        ({"video": float("nan")}, "stream_cfg_strength.video must be"),
        (["video", 2.0], "stream_cfg_strength must map stream names to strengths"),
    ):
        with pytest.raises(ConfigError, match=message):
            SamplingConfig(cfg_strength=2.0, stream_cfg_strength=bad)
    config = SamplingConfig(cfg_strength=2.0, stream_cfg_strength={"vidoe": 4.0})
    with pytest.raises(ConfigError, match="names vidoe, not a stream this model samples .its streams: audio, video"):
        sample_with(config, _toy(), _streams(), {"text": torch.randn(2, 5, dtype=torch.float64)})
    with pytest.raises(ConfigError, match="need the sampled streams"):
        config.branches()
    assert parse_stream_strengths(["video=4.5", " left =3"]) == {"video": 4.5, "left": 3.0}
    for bad in ("video", "video=", "=2", "video=strong"):
        with pytest.raises(ConfigError, match="--stream-cfg takes STREAM=W") as err:
            parse_stream_strengths([bad])
        assert "\n" not in str(err.value)


def test_sampler_presets_replace_the_solver_only():
    base = SamplingConfig(cfg_strength=4.5, steps=25, guidance="modality", text_cfg_strength=2.0)
    for name, settings in SAMPLER_PRESETS.items():
        fast = base.preset(name)
        assert {k: getattr(fast, k) for k in settings} == settings
        assert (fast.cfg_strength, fast.guidance, fast.text_cfg_strength) == (4.5, "modality", 2.0)
    fast = base.preset("fast")
    assert fast.steps * (2 if fast.solver in ("heun", "midpoint") else 1) <= 0.4 * base.steps  # <= 40 % of the NFE
    assert fast.override(steps=7).steps == 7  # an explicit --steps still wins
    with pytest.raises(ConfigError, match="unknown sampler preset 'quick'"):
        base.preset("quick")


def test_sample_with_runs_the_configured_solver_and_guidance():
    model = _toy()
    x = _streams()
    cond = {"text": torch.randn(2, 5, dtype=torch.float64)}
    config = SamplingConfig(cfg_strength=2.5, steps=4, solver="heun", shift=2.0)
    got = sample_with(config, model, x, cond)
    want = sample(model, x, cond, steps=4, solver="heun", shift=2.0, guidance=cfg(2.5))
    assert got.nfe == want.nfe == 4 * 2 * 2
    for s in got.streams:
        assert torch.equal(got.streams[s], want.streams[s])


def test_batched_and_separate_branches_agree():
    model = _toy()
    x = _streams(b=3)
    cond = {"text": torch.randn(3, 5, dtype=torch.float64)}
    branches = [
        GuidanceBranch(cond={"text": torch.randn(3, 5, dtype=torch.float64)}, cfg_strength=2.0),
        GuidanceBranch(cfg_strength=3.0),
        GuidanceBranch(cfg_strength=1.7, cross_modal=False),
    ]
    model.calls.clear()
    a = sample(model, x, cond, steps=6, guidance=branches, batched=True)
    batched_calls = list(model.calls)
    model.calls.clear()
    b = sample(model, x, cond, steps=6, guidance=branches, batched=False)
    assert a.nfe == b.nfe == 6 * 4
    assert len(batched_calls) == 12 and batched_calls[0] == (9, True)  # cond + 2 negatives in one forward
    assert len(model.calls) == 24
    for s in a.streams:
        rel = (a.streams[s] - b.streams[s]).abs().max() / b.streams[s].abs().max()
        assert float(rel) <= 1e-6


# ---------------------------------------------------------------- per-frame timesteps


def test_clean_frames_are_bit_identical_after_sampling():
    model = _toy().float()
    noise = {k: v.float() for k, v in _streams().items()}
    clean = {k: torch.randn_like(v) for k, v in noise.items()}
    t_start = {
        "audio": torch.tensor([[1.0] * 3 + [0.0] * 5, [1.0] * 8]),  # (B, N): continuation / fully clean
        "video": torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0] * 4]),  # (B, T)
    }
    out = sample(
        model,
        noise,
        {"text": torch.randn(2, 5)},
        steps=7,
        solver="heun",
        guidance=cfg(3.0),
        clean=clean,
        t_start=t_start,
    ).streams
    assert torch.equal(out["audio"][0, :3], clean["audio"][0, :3])
    assert torch.equal(out["audio"][1], clean["audio"][1])
    assert torch.equal(out["video"][0, :, :2], clean["video"][0, :, :2])
    # and the generated frames did move away from the noise
    assert not torch.equal(out["audio"][0, 3:], noise["audio"][0, 3:])
    assert not torch.equal(out["video"][1], noise["video"][1])


def test_model_sees_one_on_clean_frames():
    seen = []

    class Probe(ToyAV):
        def velocity(self, streams, t, cond, *, cross_modal=True):
            seen.append({k: v.clone() for k, v in t.items()})
            return super().velocity(streams, t, cond, cross_modal=cross_modal)

    torch.manual_seed(0)
    model = Probe().double()
    x = _streams()
    t_start = {"audio": torch.zeros(2, 8, dtype=torch.float64), "video": torch.tensor([[1.0, 0, 0, 0]] * 2).double()}
    sample(model, x, {"text": torch.zeros(2, 5).double()}, steps=4, clean=x, t_start=t_start)
    assert [float(s["video"][0, 1]) for s in seen] == [0.0, 0.25, 0.5, 0.75]
    assert all(float(s["video"][0, 0]) == 1.0 for s in seen)


def test_clean_frames_without_clean_tensor_is_an_error():
    with pytest.raises(ValueError, match="clean"):
        sample(
            _toy(),
            _streams(),
            {"text": torch.zeros(2, 5).double()},
            steps=2,
            t_start={"audio": torch.ones(2, dtype=torch.float64)},
        )


# ---------------------------------------------------------------- path, loss, timesteps


def test_path_endpoints_and_velocity():
    x0, x1 = torch.randn(3, 4), torch.randn(3, 4)
    zero, one = torch.zeros(3, 1), torch.ones(3, 1)
    assert torch.equal(interpolate(x0, x1, zero), x0)
    torch.testing.assert_close(interpolate(x0, x1, one, sigma_min=0.0), x1)
    t, h = torch.full((3, 1), 0.3, dtype=torch.float64), 1e-6
    x0d, x1d = x0.double(), x1.double()
    num = (interpolate(x0d, x1d, t + h, 1e-2) - interpolate(x0d, x1d, t - h, 1e-2)) / (2 * h)
    torch.testing.assert_close(num, velocity_target(x0d, x1d, 1e-2), rtol=1e-6, atol=1e-6)


def test_masked_loss_ignores_clean_and_padding():
    pred, target = torch.zeros(2, 4, 3), torch.ones(2, 4, 3)
    target[:, :2] = 100.0  # huge error on masked-out tokens
    mask = torch.tensor([[False, False, True, True]] * 2)[..., None]
    torch.testing.assert_close(flow_matching_loss(pred, target, mask), torch.ones(2))
    torch.testing.assert_close(flow_matching_loss(pred, torch.ones(2, 4, 3)), torch.ones(2))


def test_noised_streams_keep_clean_frames_and_mask_them():
    x1 = {"video": torch.randn(2, 3, 4, 2, 2), "audio": torch.randn(2, 6, 5)}
    noise = {k: torch.randn_like(v) for k, v in x1.items()}
    t = {"video": torch.tensor([[1.0, 0.3, 0.3, 0.3], [0.5] * 4]), "audio": torch.tensor([0.2, 1.0])}
    xt, target, mask = noised_streams(x1, t, noise)
    assert torch.equal(xt["video"][0, :, 0], x1["video"][0, :, 0])
    assert torch.equal(xt["audio"][1], x1["audio"][1])
    assert not bool(mask["video"][0, :, 0].any()) and bool(mask["video"][0, :, 1:].all())
    assert not bool(mask["audio"][1].any()) and bool(mask["audio"][0].all())
    torch.testing.assert_close(xt["audio"][0], 0.8 * noise["audio"][0] + 0.2 * x1["audio"][0])


def test_timestep_distributions():
    g = torch.Generator().manual_seed(0)
    u = TimestepSampler("uniform")(20000, generator=g)
    assert 0 <= float(u.min()) and float(u.max()) <= 1 and abs(float(u.mean()) - 0.5) < 0.01
    ln = TimestepSampler("logit_normal", mean=0.5, scale=1.0)(20000, generator=g)
    assert abs(float(ln.median()) - 1 / (1 + math.exp(-0.5))) < 0.01
    sh = TimestepSampler("shifted", shift=3.0)(20000, generator=g)
    assert float(sh.mean()) < 0.4  # mass moves towards noise
    torch.testing.assert_close(shift_time(torch.tensor([0.0, 0.5, 1.0]), 3.0), torch.tensor([0.0, 0.25, 1.0]))
    with pytest.raises(ValueError):
        TimestepSampler("gaussian")
