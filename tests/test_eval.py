"""Model-free metrics (avflow.eval) proven on signals with known answers."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from avflow.cli import main as cli_main
from avflow.eval import distribution, physics, spatial, sync
from avflow.eval.synthetic import bouncing_clip, pan_binaural

SR = 16000


def shift_audio(audio: np.ndarray, delay_s: float, sample_rate: int = SR) -> np.ndarray:
    """Delay (positive) or advance (negative) a (C, N) signal, keeping its length."""
    n = int(round(delay_s * sample_rate))
    out = np.zeros_like(audio)
    if n >= 0:
        out[:, n:] = audio[:, : audio.shape[1] - n]
    else:
        out[:, :n] = audio[:, -n:]
    return out


@pytest.mark.parametrize("delay", [0.08, -0.04])
def test_sync_against_ground_truth_events(delay):
    for seed in range(3):
        clip = bouncing_clip(seed, audio_delay_s=delay)
        got = sync.sync_to_events(clip.audio, SR, clip.events)
        assert abs(got["offset_ms"] - 1000 * delay) < 10, (seed, got)
        assert got["matched"] >= 0.5


@pytest.mark.parametrize("delay", [0.08, -0.04])
def test_sync_against_world_events(delay):
    from avflow.world.dataset import make_clip

    for seed in (1, 3):
        clip = make_clip(seed)
        events = np.array([e["time"] for e in clip.meta["events"]])
        got = sync.sync_to_events(shift_audio(clip.audio, delay), SR, events)
        assert abs(got["offset_ms"] - 1000 * delay) < 10, (seed, got)


@pytest.mark.parametrize("delay", [0.08, -0.04])
def test_sync_against_contacts_seen_in_frames(delay):
    for seed in range(3):
        clip = bouncing_clip(seed, audio_delay_s=delay)
        contacts = sync.visual_contacts(physics.track_objects(clip.frames), clip.fps)
        assert contacts.size >= 4
        got = sync.match_offset(sync.detect_onsets(clip.audio, SR), contacts)
        assert abs(got["offset_ms"] - 1000 * delay) < 10, (seed, got)
        # the frames alone place each contact far below a frame period (62.5 ms) from the true one
        nearest = clip.events[np.abs(clip.events[:, None] - contacts).argmin(0)]
        assert np.median(np.abs(contacts - nearest)) < 0.005


def flash_clip(seed: int, delay: float, fps: float = 25.0, duration: float = 4.0):
    """Grey frames with 1-frame white flashes at random frames; a decaying 1.5 kHz click at each flash + delay."""
    rng = np.random.default_rng(seed)
    T = int(duration * fps)
    frames = np.full((T, 64, 64, 3), 30, np.uint8)
    audio = np.zeros(int(duration * SR))
    for k in np.sort(rng.choice(np.arange(3, T - 3), size=7, replace=False)):
        frames[k] = 230
        start = int(round((k / fps + delay) * SR))
        n = min(800, audio.size - start)
        audio[start : start + n] += np.sin(2 * np.pi * 1500 * np.arange(n) / SR) * np.exp(-np.arange(n) / 200)
    return frames, np.stack([audio, audio]).astype(np.float32)


@pytest.mark.parametrize("delay", [0.06, -0.04])
def test_sync_offset_on_plain_mp4(tmp_path, delay):
    from avflow.data.media import read_audio, read_video, write_video
    from avflow.eval.clip import measure_clip

    frames, audio = flash_clip(7, delay)
    path = write_video(tmp_path / "flash.mp4", frames, 25, audio, SR)
    video = read_video(path)
    audio_back, sr = read_audio(path)
    got = measure_clip(audio_back.numpy(), sr, video.frames.numpy(), video.fps).sync_offset_ms
    assert got.defined and abs(got.value - 1000 * delay) < 20, got


def test_av_align_rewards_aligned_motion_peaks():
    fps, T = 16.0, 64
    moves = np.array([5, 14, 22, 33, 41, 52, 60])
    frames = np.full((T, 64, 64, 3), 40, np.uint8)
    x = 10
    for k in range(T):
        x += 6 if k in moves else 0
        frames[k, 20:30, x % 50 : x % 50 + 10] = 220
    mono = np.zeros(int(T / fps * SR))
    for k in moves:
        s = int(k / fps * SR)
        mono[s : s + 400] += np.sin(np.arange(400) * 0.7) * np.exp(-np.arange(400) / 80)
    aligned = sync.av_align(mono[None], SR, frames, fps)
    shifted = sync.av_align(np.roll(mono, int(0.25 * SR))[None], SR, frames, fps)
    assert aligned > 0.8 and shifted < 0.3, (aligned, shifted)


def test_ild_and_itd_flip_when_source_moves_left_to_right():
    from avflow.world.binaural import block_times, render_binaural

    rng = np.random.default_rng(0)
    n = 2 * SR
    noise = rng.standard_normal(n)
    az = np.linspace(-40, 40, n)
    ours = pan_binaural(noise, SR, az)
    blocks = block_times(n, SR)
    world = render_binaural(noise[None], ((np.linspace(-40, 40, blocks.size) / 90 + 0.5) * 64)[None], 64, SR)
    for audio in (ours, world):
        left, right = audio[:, : n // 3], audio[:, -n // 3 :]
        assert spatial.ild(left) > 1 and spatial.ild(right) < -1
        assert spatial.itd_gcc_phat(left, SR) > 5e-5 and spatial.itd_gcc_phat(right, SR) < -5e-5


def test_follows_object_and_swapped_channels():
    for seed in range(3):
        clip = bouncing_clip(seed)
        tracks = physics.track_objects(clip.frames)
        x = tracks.centers[:, 0, 0]
        assert spatial.follows_object(clip.audio, SR, x, 64, clip.fps) > 0.8
        assert spatial.follows_object(clip.audio[::-1], SR, x, 64, clip.fps) < -0.8


def test_binaural_distances_on_known_pairs():
    clip = bouncing_clip(0)
    ref = clip.audio
    assert spatial.stft_distance(ref, ref) == pytest.approx(0, abs=1e-9)
    assert spatial.envelope_distance(ref, ref) == pytest.approx(0, abs=1e-9)
    assert spatial.snr(0.5 * ref, ref) == pytest.approx(10 * np.log10(4), abs=1e-3)
    swapped = ref[::-1]
    assert spatial.ipd_error(swapped, ref) > 10 * spatial.ipd_error(0.9 * ref, ref) + 0.1
    assert spatial.delta_ild(swapped, ref) == pytest.approx(2 * abs(spatial.ild(ref)), rel=1e-6)
    assert spatial.delta_itd(swapped, ref, SR) > 50
    assert spatial.phase_distance(swapped, ref) > 1.0 > spatial.phase_distance(0.9 * ref, ref) + 0.9
    assert spatial.magnitude_distance(swapped, ref) > spatial.magnitude_distance(0.99 * ref, ref)


def test_gravity_fit_residual_separates_physical_from_gravity_free_motion():
    real, free = [], []
    for seed in range(20):
        for g, bucket in ((300.0, real), (0.0, free)):
            clip = bouncing_clip(seed, gravity=g, duration=3.0)
            bucket.append(
                physics.trajectory_residual(physics.track_objects(clip.frames), clip.fps, 300.0)["residual_px"]
            )
    assert np.mean(free) >= 5 * np.mean(real), (np.mean(free), np.mean(real))
    clip = bouncing_clip(0)
    tracks = physics.track_objects(clip.frames)
    assert physics.trajectory_residual(tracks, clip.fps)["gravity_fit"] == pytest.approx(300.0, rel=0.05)
    assert physics.object_permanence(tracks) == 1.0


def test_permanence_and_energy_catch_broken_videos():
    clip = bouncing_clip(1)
    frames = clip.frames.copy()
    frames[20:26] = frames[0, 0, 0]  # the object vanishes for 6 frames mid-clip
    assert physics.object_permanence(physics.track_objects(frames)) < 0.95
    tracks = physics.track_objects(clip.frames)
    assert physics.energy_growth(tracks, clip.fps, 300.0) <= 0.2
    pumped = bouncing_clip(1, restitution=1.25)  # every floor bounce gains energy
    assert physics.energy_growth(physics.track_objects(pumped.frames), pumped.fps, 300.0) > 0.5


def test_frechet_distance_matches_gaussian_formula():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    b = rng.standard_normal((4000, 3)) * 2 + np.array([1.0, 0, 0])
    # ‖μ‖² + Σ (1 + 4 − 2·2) = 1 + 3
    assert distribution.frechet_distance(a, b) == pytest.approx(4.0, abs=0.25)
    assert distribution.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fd_separates_world_with_swapped_materials():
    from avflow.world.dataset import render_audio
    from avflow.world.render import render_frames
    from avflow.world.scene import WorldConfig, sample_scene

    config = WorldConfig(materials=("wood", "rubber"))
    swap = {"wood": "metal", "rubber": "glass"}
    emb = distribution.StatsEmbedder()
    world, swapped = [], []
    for seed in range(24):
        scene = sample_scene(config, np.random.default_rng(seed), seed=seed)
        frames, _ = render_frames(scene)
        other = replace(scene, objects=[replace(o, material=swap[o.material]) for o in scene.objects])
        world.append(emb(render_audio(scene) * config.gain, SR, frames, 16.0))
        swapped.append(emb(render_audio(other) * config.gain, SR, frames, 16.0))
    world, swapped = np.stack(world), np.stack(swapped)
    between = distribution.frechet_distance(world, swapped)
    halves = distribution.frechet_distance(world[:12], world[12:])
    assert between > 10 * halves, (between, halves)


def world_folders(tmp_path, refs: int, preds: int, delay_s) -> tuple:
    """(ref, pred): world clips c0.. as references, the first `preds` of them as mp4s with their audio delayed by
    `delay_s(seed)`."""
    from avflow.data.media import write_video
    from avflow.world.dataset import make_clip, write_clip

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for seed in range(refs):
        clip = make_clip(seed)
        write_clip(clip, ref / f"c{seed}")
        if seed < preds:
            write_video(pred / f"c{seed}.mp4", clip.frames, 16, shift_audio(clip.audio, delay_s(seed)), SR)
    return ref, pred


def test_cli_eval_on_world_folder_and_mp4s(tmp_path, capsys):
    ref, pred = world_folders(tmp_path, 2, 2, lambda seed: 0.05)
    out = tmp_path / "res.json"
    assert cli_main(["eval", str(pred), "--ref", str(ref), "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["n_clips"] == 2 and result["n_paired"] == 2
    assert abs(result["summary"]["sync_gt_ms"]["median"] - 50) < 10  # generated audio vs the reference's events
    assert "sync_gt_ms" not in result["mean"] and result["mean"]["sync_gt_abs_ms"] > 0  # never a signed mean
    assert result["distribution"] == {} and result["distribution_n"]["fd_av"] == {"n_pred": 2, "n_ref": 2}
    assert "16 feature dimensions" in result["distribution_undefined"]["fd_av"]  # 2 clips: no Fréchet distance
    assert "sync_gt_ms" in capsys.readouterr().out
    assert cli_main(["eval", str(tmp_path / "missing")]) == 2


def test_a_large_video_is_measured_at_a_working_size_with_the_same_sides(tmp_path):
    """A video without ground truth larger than EVAL_MAX_SIDE is read scaled down (a 4 s 4K clip read whole took
    21 GB): the frames are at most that size, and the clip reads the same offset and sides as at its own size."""
    from avflow.data.media import write_video
    from avflow.eval.clip import measure_clip
    from avflow.eval.report import EVAL_MAX_SIDE, load_eval_clip

    clip = bouncing_clip(1)
    big = clip.frames.repeat(8, axis=1).repeat(8, axis=2)  # (T, 512, 512, 3)
    small_path = write_video(tmp_path / "small.mp4", clip.frames, clip.fps, clip.audio, SR, crf=8)
    big_path = write_video(tmp_path / "big.mp4", big, clip.fps, clip.audio, SR, crf=8)
    small, large = load_eval_clip(small_path), load_eval_clip(big_path)
    assert small.frames.shape[1:3] == (64, 64) and large.frames.shape[1:3] == (EVAL_MAX_SIDE, EVAL_MAX_SIDE)
    got = [measure_clip(c.audio, c.sample_rate, c.frames, c.fps) for c in (small, large)]
    offsets = [g.sync_offset_ms.get() for g in got]
    assert all(np.isfinite(offsets)) and abs(offsets[0] - offsets[1]) < 10, offsets
    assert got[0].side_agreement.get() == got[1].side_agreement.get() == 1.0
    (tmp_path / "big.json").write_text(json.dumps({"offset_ms": 0.0, "note": "ground truth in the source's pixels"}))
    assert load_eval_clip(big_path).frames.shape[1:3] == (512, 512)


def test_a_folder_is_scored_one_clip_at_a_time_with_the_same_frechet_distances(tmp_path, monkeypatch):
    """`avflow eval` of a folder kept every clip's frames until the end (for the Fréchet distances): a folder of
    long videos grew without bound. Each clip's frames are freed once it is measured and embedded (no clip but the
    current one alive when progress is reported), and the distances equal those of all clips embedded at once (an
    extra reference without a prediction counted, as before)."""
    import gc
    import weakref

    from avflow.eval import report

    ref, pred = world_folders(tmp_path, 4, 3, lambda seed: 0.03 * seed)  # c3: a reference without a prediction
    alive: list[weakref.ref] = []
    load = report.load_eval_clip

    def tracked(path, cid=None):
        clip = load(path, cid)
        alive.append(weakref.ref(clip.frames))
        return clip

    def progress(cid, measures):
        gc.collect()
        assert sum(r() is not None for r in alive) <= 2, cid  # this clip and its reference only

    monkeypatch.setattr(report, "load_eval_clip", tracked)
    monkeypatch.setattr(report, "FD_DIM", 2)  # 3 and 4 clips: defined only below the embedding's 16 dimensions
    result = report.evaluate(pred, ref, progress=progress)
    monkeypatch.setattr(report, "load_eval_clip", load)
    preds = [load(pred / f"c{s}.mp4", f"c{s}") for s in range(3)]
    refs = [load(ref / f"c{s}", f"c{s}") for s in range(4)]
    for modality in ("av", "audio", "video"):
        embed = distribution.StatsEmbedder(modality)
        a = np.stack([embed(c.audio, c.sample_rate, c.frames, c.fps) for c in preds])
        b = np.stack([embed(c.audio, c.sample_rate, c.frames, c.fps) for c in refs])
        assert result["distribution"][f"fd_{modality}"] == distribution.frechet_distance(a, b), modality


def test_normal_flow_two_grey_frames_at_a_time_equals_the_whole_video_in_float():
    """The flow magnitude reads two grey frames at a time (a float copy of the whole video took 4x its size): the
    same numbers as the formula over the whole video converted at once."""
    frames = np.random.default_rng(0).integers(0, 256, (9, 24, 32, 3), dtype=np.uint8)
    frames[4:] = frames[4:] // 2  # some frames darker: flow where the picture changes
    grey = frames.astype(np.float32).mean(axis=-1) / 255.0
    expected = np.zeros(len(frames))
    for k in range(1, len(frames)):
        gy, gx = np.gradient(0.5 * (grey[k] + grey[k - 1]))
        gmag = np.hypot(gx, gy)
        sel = gmag > 0.02
        expected[k] = np.mean(np.abs(grey[k] - grey[k - 1])[sel] / gmag[sel])
    expected[0] = expected[1]
    assert np.array_equal(sync.normal_flow_magnitude(frames), expected)
