"""Evaluation metrics that mean what they say (audit of 2026-12-06), on synthetic signals with known answers: the
Fréchet features at one rate, its set sizes and small-set refusal, its scale-free eps, the Mono2Binaural STFT
distance, paired measures at another rate or against a mono reference, no signed mean across clips (`avflow eval`
and `avflow experiment`), the physics fits at a landing and with contacts between objects, and the PSNR cap."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from avflow.data.audio import resample
from avflow.eval import distribution, physics, report, spatial
from avflow.eval.measure import Measure
from avflow.eval.report import PAIRED, EvalClip, clip_measures, evaluate, format_table, summarize
from avflow.eval.video_quality import frame_psnr

SR = 16000


def _sound(seed: int, n: int = SR // 2) -> np.ndarray:
    """(2, n) float32: noise plus a tone whose pitch and level depend on the seed (left 6 dB louder)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    mono = 0.05 * rng.standard_normal(n) + 0.2 * (1 + seed % 3) * np.sin(2 * np.pi * (300 + 150 * seed) * t)
    return np.stack([mono, 0.5 * mono]).astype(np.float32)


# --- Fréchet distance --------------------------------------------------------------------------------------------


def test_audio_statistics_are_taken_at_16_khz_whatever_the_clip_rate():
    """The same sound at 48 kHz and at 16 kHz has the same statistics (the window, hop and mel range were the
    file's: fd_audio 325.7 between one set and itself at 48 kHz, 23.1 between two different sets)."""
    for seed in range(3):
        x = _sound(seed)
        at16 = distribution.audio_stats(x, SR)
        at48 = distribution.audio_stats(resample(x, SR, 48000), 48000)
        keep = np.arange(64) != 31  # the top band's mean: 8 kHz, where the resampler's anti-alias filter rolls off
        np.testing.assert_allclose(at48[keep], at16[keep], atol=0.03)
        assert abs(at48[31] - at16[31]) < 0.3
        other = distribution.audio_stats(_sound(seed + 3), SR)
        assert np.abs(other - at16).max() > 0.5  # a different sound does differ


def test_frechet_distance_scales_with_its_features():
    """FD(s·a, s·b) = s²·FD(a, b) and matches the Gaussian formula at any scale (an absolute eps of 1e-6 added 33 %
    to features of variance 1e-6)."""
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 4))
    b = rng.standard_normal((400, 4)) @ np.diag([1.0, 2.0, 0.5, 1.0]) + 0.5

    def exact(x, y):
        sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
        mu = x.mean(0) - y.mean(0)
        return mu @ mu + np.trace(sx + sy - 2 * sqrtm(sx @ sy).real)

    for s in (1.0, 1e-3, 1e3):
        assert distribution.frechet_distance(s * a, s * b) == pytest.approx(exact(s * a, s * b), rel=1e-4), s
    assert distribution.frechet_distance(1e-3 * a, 1e-3 * b) == pytest.approx(
        1e-6 * distribution.frechet_distance(a, b), rel=1e-6
    )


def _wav_folder(path, seeds) -> None:
    path.mkdir()
    for seed in seeds:
        sf.write(path / f"c{seed:02d}.wav", _sound(seed, SR // 4).T, SR, subtype="FLOAT")


def test_a_frechet_distance_gives_its_set_sizes_and_is_undefined_with_no_more_clips_than_dimensions(tmp_path):
    """fd_* come with n_pred and n_ref (JSON and table); with no more clips than the embedding's 16 dimensions in
    either set a distance is undefined with the reason (2 clips per set were scored: mostly small-sample bias)."""
    ref, pred, few = tmp_path / "ref", tmp_path / "pred", tmp_path / "few"
    _wav_folder(ref, range(17))
    _wav_folder(pred, range(17, 34))
    _wav_folder(few, range(17, 33))
    full = evaluate(pred, ref)
    assert full["distribution_n"] == {"fd_audio": {"n_pred": 17, "n_ref": 17}}  # audio-only: no fd_video, fd_av
    assert full["distribution"]["fd_audio"] > 0 and full["distribution_undefined"] == {}
    table = format_table(full)
    assert "17 vs 17 clips" in table and "300/N" in table
    short = evaluate(few, ref)
    assert "fd_audio" not in short["distribution"] and short["distribution_n"]["fd_audio"]["n_pred"] == 16
    why = short["distribution_undefined"]["fd_audio"]
    assert why.startswith("16 predictions and 17 references") and "16 feature dimensions" in why
    assert why in format_table(short)
    json.dumps(short)  # the result stays plain JSON


# --- spatial ---------------------------------------------------------------------------------------------------------


def test_stft_distance_is_the_mono2binaural_squared_error():
    """Gao & Grauman's evaluate.py: per ear the mean squared Re/Im difference, summed, no square root: twice the
    error reads four times (with a root per ear, twice)."""
    ref = _sound(0).astype(np.float64)
    err = 0.01 * np.random.default_rng(1).standard_normal(ref.shape)
    one = spatial.stft_distance(ref + err, ref)
    assert spatial.stft_distance(ref + 2 * err, ref) == pytest.approx(4 * one, rel=1e-9)
    assert spatial.stft_distance(ref + 0.5 * err, ref) == pytest.approx(0.25 * one, rel=1e-9)
    d = spatial._spec(err, 512, 160, 400)  # the STFT is linear: the error's own
    assert one == pytest.approx(sum(np.mean(np.stack([d[c].real, d[c].imag]) ** 2) for c in range(2)), rel=1e-9)


def test_paired_measures_at_another_rate_and_against_a_mono_reference():
    """A prediction at 48 kHz is compared with its 16 kHz reference at 16 kHz (every paired measure vanished without
    a word before); a mono reference (or clip) makes every paired measure undefined with the reason."""
    x = _sound(2, SR)
    ref = EvalClip("r", x, SR, None, 0.0)
    same = clip_measures(EvalClip("p", resample(x, SR, 48000), 48000, None, 0.0), ref).measures
    assert all(same[k].defined for k in PAIRED), [k for k in PAIRED if not same[k].defined]
    assert same["snr_db"].value > 30 and same["delta_ild_db"].value < 0.01 and same["delta_itd_us"].value < 1
    other = clip_measures(EvalClip("p", _sound(5, SR), SR, None, 0.0), ref).measures
    assert same["stft_dist"].value < 1e-3 * other["stft_dist"].value
    mono = clip_measures(EvalClip("p", x, SR, None, 0.0), EvalClip("r", x[:1], SR, None, 0.0)).measures
    for k in PAIRED:
        assert not mono[k].defined and mono[k].reason.startswith("its reference is mono"), k
    assert mono["ild_db"].defined  # the clip's own cues stay
    both = clip_measures(EvalClip("p", x[:1], SR, None, 0.0), EvalClip("r", x[:1], SR, None, 0.0)).measures
    assert both["stft_dist"].reason.startswith("the clip and its reference are mono")


def test_descriptions_cover_every_paired_and_spatial_measure():
    for k in (*PAIRED, "ild_db", "itd_us", "phys_gravity_fit"):
        assert report.DESCRIPTIONS.get(k), k


# --- no signed mean across clips ---------------------------------------------------------------------------------


def test_the_summary_never_averages_signed_offsets():
    """+120 and −120 ms do not average to a perfect 0: a signed offset has no `mean` (so none in `avflow eval`'s
    JSON `mean`), but `mean_abs` and `median_abs`."""
    per_clip = {
        "a": {"sync_offset_ms": Measure.of(120.0), "sync_offset_abs_ms": Measure.of(120.0)},
        "b": {"sync_offset_ms": Measure.of(-120.0), "sync_offset_abs_ms": Measure.of(120.0)},
        "c": {"sync_offset_ms": Measure.undefined("silent audio"), "sync_offset_abs_ms": Measure.undefined("x")},
    }
    rows = summarize(per_clip)
    assert "mean" not in rows["sync_offset_ms"]
    assert rows["sync_offset_ms"]["mean_abs"] == 120.0 and rows["sync_offset_ms"]["median_abs"] == 120.0
    assert rows["sync_offset_ms"]["n_defined"] == 2 and rows["sync_offset_abs_ms"]["mean"] == 120.0


def _stub_eval(monkeypatch, offsets):
    """evaluate_samples on stub clips: clip_measures returns these offsets (None: undefined), one residual each."""
    rng = np.random.default_rng(0)

    def measures(clip, ref=None, config=None):
        off = offsets[int(clip.id)]
        m = Measure.of(off) if off is not None else Measure.undefined("no visual events")
        abs_m = Measure.of(abs(off)) if off is not None else m
        return SimpleNamespace(measures={"sync_offset_ms": m, "sync_offset_abs_ms": abs_m, "sync_gt_ms": m,
                                         "sync_gt_abs_ms": abs_m, "phys_residual_px": Measure.of(0.5)})  # fmt: skip

    def load(stem):
        frames = rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
        return SimpleNamespace(audio=_sound(int(stem.name)), frames=frames, meta={})

    monkeypatch.setattr("avflow.eval.report.clip_measures", measures)
    monkeypatch.setattr("avflow.world.dataset.load_clip", load)


def test_an_experiment_scores_no_signed_offset_and_counts_where_each_metric_is_defined(monkeypatch, tmp_path):
    """`avflow experiment` averaged signed offsets across clips (+120 and −120 ms: 0) and dropped undefined clips
    without a count: it reports |x| only, each metric with `<metric>_n`, and a config that asks for a signed offset
    is a one-line error naming the |x| variant."""
    from avflow.errors import ConfigError
    from avflow.experiments.arm import evaluate_samples
    from avflow.experiments.configs import EVAL_METRICS, ArmConfig, ExperimentConfig, check_experiment

    offsets = [120.0, -120.0, None]
    _stub_eval(monkeypatch, offsets)
    manifest = {"sample_rate": SR, "eval": [{"id": str(i), "n_events": 3} for i in range(3)]}
    size = SimpleNamespace(fps=16, heavy_min_events=2, free_max_events=0)
    video = np.zeros((3, 4, 8, 8, 3), np.uint8)
    out = evaluate_samples(video, np.stack([_sound(i) for i in range(3)]), tmp_path, manifest, size)
    assert "sync_offset_ms" not in out and "sync_gt_ms" not in out
    assert out["sync_offset_abs_ms"] == 120.0 and out["sync_offset_abs_ms_n"] == 2.0
    assert out["phys_residual_px_n"] == 3.0 and out["phys_residual_px_heavy_n"] == 3.0
    assert out["phys_residual_px_free_n"] == 0.0 and out["fd_av_n"] == 3.0
    assert {"sync_offset_abs_ms_n", "fd_av_n"} <= set(EVAL_METRICS) and "sync_offset_ms" not in EVAL_METRICS
    exp = ExperimentConfig(name="e", description="d", arms=[ArmConfig("a")], metrics=["sync_offset_ms"], baseline="a")
    with pytest.raises(ConfigError, match=r"metrics\[0\]: sync_offset_ms is a signed offset.*use sync_offset_abs_ms"):
        check_experiment(exp)


def test_results_scored_before_the_metric_change_are_refused(tmp_path):
    """A result records its settings; those now carry the metrics version, so one scored with the old semantics
    (no version) is refused, never averaged with new ones."""
    from avflow.errors import ConfigError
    from avflow.experiments.arm import METRICS_VERSION, arm_settings
    from avflow.experiments.configs import SIZES, ArmConfig, ExperimentConfig
    from avflow.experiments.runner import check_results, result_path

    arm = ArmConfig("a")
    exp = ExperimentConfig(name="e", description="d", arms=[arm], metrics=["sync_gt_abs_ms"], baseline="a")
    settings = lambda arm, seed: arm_settings(exp, arm, {}, SIZES["tiny"], 2, seed, None)  # noqa: E731
    assert settings(arm, 0)["metrics_version"] == METRICS_VERSION >= 2
    path = result_path(tmp_path, "a", 0)
    path.parent.mkdir(parents=True)
    old = {k: v for k, v in settings(arm, 0).items() if k != "metrics_version"}
    path.write_text(json.dumps({"arm": "a", "seed": 0, "settings": old, "metrics": {"sync_gt_abs_ms": 1.0}}))
    refused = rf"metrics_version \(not set\) \(this run: {METRICS_VERSION}\); use another --out"
    with pytest.raises(ConfigError, match=refused):
        check_results([arm], [0], tmp_path, settings)


# --- physics -------------------------------------------------------------------------------------------------------


def test_a_landing_at_rest_then_rolling_fits_the_truth():
    """A ball that falls, lands at rest between two frames and rolls to a stop: the fit is the truth (the rolling
    stretch was fitted on the clip's first frames, by index into the wrong array: 2.08 px on a true world clip)."""
    fps, g = 16.0, 320.0
    t = np.arange(32) / fps
    t_land = np.sqrt(2 * 42.0 / g)  # 0.512 s: between frames 8 and 9
    tau = np.clip(t - t_land, 0.0, 0.5)  # rolling decelerates at 60 px/s² from 30 px/s to rest in 0.5 s
    x = np.where(t < t_land, 10 + 30 * t, 10 + 30 * t_land + 30 * tau - 30 * tau**2)
    y = np.where(t < t_land, 10 + 0.5 * g * t**2, 52.0)
    fit = physics.fit_trajectory(t, x, y, g)
    assert fit["residual"] < 0.05, fit
    assert physics.fit_trajectory(t, x, y)["gravity_fit"] == pytest.approx(g, rel=1e-6)


def test_object_contacts_find_a_collision_between_frames_and_not_a_near_pass():
    """Two discs (radius 3) meeting head on between frames 4 and 5 touch there (and frame 6 is flagged: the step
    across the contact, carried on, comes near again); two passing 10 px apart never touch."""
    t = np.arange(10.0)
    area = np.full((10, 2), np.pi * 9.0)
    meet = 4.6  # frame time of the collision; they separate at half the speed
    xa = np.where(t < meet, 10 + 4 * t, 10 + 4 * meet - 2 * (t - meet))
    xb = np.where(t < meet, 52.8 - 4 * t, 52.8 - 4 * meet + 2 * (t - meet))  # 6 px apart (touching) at t = 4.6
    hit = np.stack([np.stack([xa, np.full(10, 20.0)], 1), np.stack([xb, np.full(10, 20.0)], 1)], 1)
    got = physics.object_contacts(physics.Tracks(hit, area, (64, 64)))
    assert np.flatnonzero(got[:, 0]).tolist() == [4, 5, 6] and (got[:, 0] == got[:, 1]).all()
    by = hit.copy()
    by[:, 1, 0] = 52.8 - 4 * t
    by[:, 1, 1] = 30.0  # 10 px below the first: they cross without touching
    assert not physics.object_contacts(physics.Tracks(by, area, (64, 64))).any()


def test_energy_growth_of_true_world_motion_is_zero():
    """The world never adds energy but in a collision between objects (which moves it from one to the other): on
    the true trajectories of 60 two-object scenes energy growth is 0 wherever defined (2 scenes read 0.125-0.14
    before: object contacts, and central differences across a wall bounce)."""
    from avflow.world.render import frame_times
    from avflow.world.scene import WorldConfig, sample_scene

    config = WorldConfig(duration=4.0, fps=16, min_objects=2, max_objects=2)
    growth = []
    for seed in range(60):
        scene = sample_scene(config, np.random.default_rng(seed), seed=seed)
        pos = scene.trajectories.at(frame_times(scene)).transpose(1, 0, 2)  # (T, K, 2)
        area = np.broadcast_to([np.pi * o.size**2 for o in scene.objects], pos.shape[:2]).copy()
        tracks = physics.Tracks(pos, area, (config.height, config.width))
        growth.append(physics.energy_growth(tracks, config.fps, config.gravity * config.height))
    growth = np.array(growth)
    assert np.isfinite(growth).sum() >= 40
    assert np.nanmax(growth) == 0.0, np.flatnonzero(growth > 0)


# --- video ---------------------------------------------------------------------------------------------------------


def test_psnr_of_an_exact_frame_is_capped_at_100_db():
    ref = np.full((3, 8, 8, 3), 100, np.uint8)
    rec = ref.copy()
    rec[0] += 10
    rec[1] += 1
    np.testing.assert_allclose(frame_psnr(ref, rec), [10 * np.log10(255**2 / 100), 10 * np.log10(255**2), 100.0])
