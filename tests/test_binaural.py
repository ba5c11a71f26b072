"""Binaural generation: the dual-branch flow model, its conditioning and task, the cache, the pipeline, the spatialiser
and the CLI (random tiny weights: nothing here needs a trained model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from avflow.codecs.world import WorldCodecs
from avflow.codecs.world_audio_codec import WorldAudioCodec, WorldAudioCodecConfig
from avflow.eval.spatial import ild, itd_gcc_phat
from avflow.flow import cfg, sample
from avflow.models.binaural import BinauralConfig, BinauralFlow, load_binaural, save_binaural
from avflow.nn.spatiotemporal import video_features
from avflow.pipelines.binaural import BinauralPipeline
from avflow.pipelines.spatialise import Anchoring, amplitude_pan, spatialise
from avflow.train.binaural_task import BinauralFlowConfig, BinauralFlowTask

SR = 16000
C = 8  # latent channels of the tiny codec and model


def moving_square(t: int = 16, h: int = 16, w: int = 32, side: str = "left", seed: int = 0) -> np.ndarray:
    """Frames (T, H, W, 3) uint8: grey background, a white 4x4 square bouncing vertically on one side."""
    rng = np.random.default_rng(seed)
    frames = np.full((t, h, w, 3), 60, dtype=np.uint8)
    x0 = rng.integers(1, w // 2 - 5) if side == "left" else rng.integers(w // 2 + 1, w - 5)
    for k in range(t):
        y = int(abs((k % 8) - 4) * (h - 5) / 4)
        frames[k, y : y + 4, x0 : x0 + 4] = 255
    return frames


def tiny_model(seed: int = 0, nonzero: bool = True) -> BinauralFlow:
    torch.manual_seed(seed)
    model = BinauralFlow(BinauralConfig(latent_dim=C, dim=32, depth=2, heads=2, bins=8))
    if nonzero:  # zero-initialised output layers would make every velocity 0 (and any symmetry test trivial)
        with torch.no_grad():
            for p in model.parameters():
                if p.abs().sum() == 0:
                    p.normal_(0, 0.1)
    return model


def tiny_codecs() -> WorldCodecs:
    torch.manual_seed(0)
    audio = WorldAudioCodec(WorldAudioCodecConfig(latent_channels=C, width=16, frame_blocks=1, latent_blocks=1))
    return WorldCodecs(video=None, audio=audio.eval().requires_grad_(False), checksum="tiny", folder=Path("tiny"))


def conditions(frames: np.ndarray, n: int, mono: torch.Tensor | None = None, bins: int = 8) -> dict[str, torch.Tensor]:
    f = video_features(frames, 16.0, n, token_rate=32.0, bins=bins)
    cond = {"timing": f["timing"][None], "spatial": f["spatial"][None], "video_on": torch.ones(1)}
    on = torch.ones(1) if mono is not None else torch.zeros(1)
    return cond | {"mono": mono if mono is not None else torch.zeros(1, n, C), "mono_on": on}


def test_forward_backward_sampling_and_the_task_drops():
    model = tiny_model(nonzero=False)
    b, n = 2, 9
    cond = {k: torch.cat([v, v]) for k, v in conditions(moving_square(), n, torch.randn(1, n, C)).items()}
    streams = {s: torch.randn(b, n, C) for s in ("left", "right")}
    batch = {"streams": streams, "cond": cond, "seed": torch.tensor([1, 2])}
    task = BinauralFlowTask(BinauralFlowConfig(cond_dropout=0.5))
    loss = task.loss(model, task.prepare(batch, torch.device("cpu")))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    for drop, on in ((1.0, 0.0), (0.0, 1.0)):
        prepared = BinauralFlowTask(BinauralFlowConfig(mono_drop=drop, video_drop=drop)).prepare(batch, "cpu")
        assert prepared["cond"]["mono_on"].tolist() == [on, on] == prepared["cond"]["video_on"].tolist()
    noise = {s: torch.randn(b, n, C) for s in ("left", "right")}
    result = sample(tiny_model(), noise, cond, steps=3, guidance=cfg(2.0, cond=tiny_model().empty_conditions(b, n)))
    assert result.nfe == 6 and all(result.streams[s].shape == (b, n, C) for s in noise)
    t0 = {s: torch.zeros(b) for s in noise}
    off = tiny_model().velocity(noise, t0, cond, cross_modal=False)
    no_mono = tiny_model().velocity(noise, t0, cond | {"mono_on": torch.zeros(b)})
    on = tiny_model().velocity(noise, t0, cond)
    assert not torch.allclose(off["left"], on["left"]) and not torch.allclose(no_mono["left"], on["left"])


@pytest.mark.parametrize("with_mono", [False, True])
def test_mirrored_video_with_the_same_mono_swaps_the_ears(with_mono: bool):
    """Exact up to float summation order: the tolerance is atol = rtol = 1e-5."""
    model = tiny_model(seed=1).eval()
    frames = moving_square(side="left", seed=3)
    frames[:, 2:6, 20:23] = 200  # a second, static object elsewhere
    n = 12
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, n, C, generator=g), torch.randn(1, n, C, generator=g)
    mono = torch.randn(1, n, C, generator=g) if with_mono else None
    t = {"left": torch.tensor([0.3]), "right": torch.tensor([0.3])}
    with torch.no_grad():
        out = model.velocity({"left": a, "right": b}, t, conditions(frames, n, mono))
        mirrored = model.velocity({"left": b, "right": a}, t, conditions(frames[:, :, ::-1].copy(), n, mono))
        swapped = model.velocity({"left": b, "right": a}, t, conditions(frames, n, mono))
    torch.testing.assert_close(mirrored["left"], out["right"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mirrored["right"], out["left"], atol=1e-5, rtol=1e-5)
    assert (swapped["left"] - out["right"]).abs().max() > 1e-3  # not trivially symmetric


def test_model_save_load_roundtrip(tmp_path):
    model = tiny_model(seed=2)
    save_binaural(model, tmp_path / "m.safetensors", codecs_checksum="abc")
    loaded, checksum = load_binaural(tmp_path / "m.safetensors")
    assert checksum == "abc"
    x = {s: torch.randn(1, 5, C) for s in ("left", "right")}
    t = {s: torch.tensor([0.5]) for s in x}
    cond = loaded.empty_conditions(1, 5)
    torch.testing.assert_close(loaded.velocity(x, t, cond)["left"], model.half().float().velocity(x, t, cond)["left"])


def tiny_world(folder: Path, seconds: float = 0.5, clips: int = 2) -> Path:
    """A world folder with a `train` split of `clips` one-object 32x32 clips of `seconds` each."""
    import json

    from avflow.world.dataset import make_clip, write_clip
    from avflow.world.scene import WorldConfig

    split = folder / "train"
    split.mkdir(parents=True)
    config = WorldConfig(width=32, height=32, duration=seconds, max_objects=1)
    for i in range(clips):
        write_clip(make_clip(i, config, f"c{i}"), split / f"c{i}")
    (split / "manifest.jsonl").write_text("".join(json.dumps({"id": f"c{i}"}) + "\n" for i in range(clips)))
    return folder


def test_cache_round_trip_and_stale_codecs(tmp_path):
    from avflow.errors import WeightsError
    from avflow.train.binaural_cache import cache_world_split, check_cache
    from avflow.train.datasets import TensorFile, TensorFileConfig

    tiny_world(tmp_path / "world")
    codecs = tiny_codecs()
    out = cache_world_split(tmp_path / "world", "train", tmp_path / "cache.safetensors", codecs, bins=8)
    data = TensorFile(TensorFileConfig(file=str(out)))
    item = data[1]
    assert len(data) == 2 and item["streams"]["left"].shape == (16, C) == item["cond"]["mono"].shape
    assert item["cond"]["spatial"].shape == (16, 8, 8) and item["cond"]["mono_on"] == 1
    check_cache(out, codecs)
    with pytest.raises(WeightsError, match="trained with world codecs"):
        check_cache(out, WorldCodecs(video=None, audio=codecs.audio, checksum="other", folder=Path("x")))


def test_pipeline_with_a_mono_keeps_it_and_without_one_generates():
    pipe = BinauralPipeline(tiny_model(), tiny_codecs().audio)
    sampling = pipe.sampling.override(steps=2)
    frames = moving_square(t=8)
    mono = np.random.default_rng(0).standard_normal(7000).astype(np.float32) * 0.1
    out = pipe.generate(frames, 16.0, 7000, mono=mono, seed=0, sampling=sampling)
    assert out.shape == (2, 7000) and out.dtype == np.float32
    assert np.corrcoef(out.mean(0), mono)[0, 1] > 0.9  # the given mono's content and timing (random cues: some bins
    # have nearly opposite ears, where the mix is kept only up to the |D| floor of the cue transfer)
    alone = pipe.generate(frames, 16.0, 7000, seed=0, sampling=sampling)
    assert alone.shape == (2, 7000) and np.isfinite(alone).all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_spatialiser_follows_the_object(side: str):
    frames = moving_square(t=16, side=side)
    mono = np.random.default_rng(1).standard_normal(SR).astype(np.float32) * 0.1
    out = spatialise(mono, SR, frames, fps=16.0)
    sign = 1 if side == "left" else -1
    assert out.shape == (2, SR)
    assert sign * ild(out) > 1.0 and sign * itd_gcc_phat(out, SR) > 5e-5
    pan = amplitude_pan(mono, SR, frames, fps=16.0)
    assert sign * ild(pan) > 1.0 and abs(itd_gcc_phat(pan, SR)) < 1e-5


@pytest.mark.parametrize("delay_s", [0.0, 0.2, -0.15])
def test_spatialiser_puts_each_flash_sound_on_its_side(delay_s: float):
    """Flashes on the left and right, each heard from its side, the track `delay_s` off the video, and a disc drifting
    silently on the right the whole time: anchored on the onsets matched to the flashes, every sound is rendered on
    its flash's side; the tracker alone (the spatialiser before anchoring) puts the left flashes' sounds on the
    drifting disc."""
    from avflow.eval.side import CueConfig, ild_at
    from avflow.eval.synthetic import flash_clip

    clip = flash_clip(3, audio_delay_s=delay_s, fps=25.0, duration=4.0, n_events=5, sample_rate=SR)
    frames = clip.frames.copy()  # (T, H, W, 3)
    t, _, w, _ = frames.shape
    for k in range(t):
        y = 6 + (k * 48) // t
        frames[k, y : y + 6, int(0.85 * w) - 3 : int(0.85 * w) + 3] = (200, 200, 90)
    mono = clip.audio.mean(0)
    louder = CueConfig(window_s=0.05)

    def sides_right(audio: np.ndarray) -> int:
        right = 0
        for event in clip.meta["events"]:
            ild_db = ild_at(audio, SR, event["time"] + delay_s, louder)
            right += ild_db.defined and (ild_db.value > 0) == (event["side"] == "left")
        return right

    events = len(clip.meta["events"])
    assert {e["side"] for e in clip.meta["events"]} == {"left", "right"}
    assert sides_right(clip.audio) == events  # the measure reads the reference right
    assert sides_right(spatialise(mono, SR, frames, clip.fps)) == events
    assert sides_right(amplitude_pan(mono, SR, frames, clip.fps)) == events
    assert sides_right(spatialise(mono, SR, frames, clip.fps, Anchoring(enabled=False))) < events


@pytest.mark.parametrize("delay_s", [0.2, -0.15])
def test_frames_on_the_audio_clock_show_each_flash_while_its_sound_lasts(delay_s: float):
    """Flashes on both sides, the sound `delay_s` off the video: the clock's lag is the delay (within a frame), and
    the frames on the audio's clock show each flash on its side at its sound's onset and 0.3 s after it (held), where
    the video's own frames show it for its two frames only."""
    from avflow.eval.synthetic import flash_clip
    from avflow.pipelines.spatialise import audio_clock, frames_on_audio_clock

    clip = flash_clip(4, audio_delay_s=delay_s, fps=25.0, duration=4.0, n_events=5, sample_rate=SR)
    mono, w = clip.audio.mean(0), clip.frames.shape[2]
    clock = audio_clock(mono, SR, clip.frames, clip.fps)
    assert abs(clock.lag_s - delay_s) <= 1.0 / clip.fps and len(clock.anchors) == len(clip.meta["events"])
    moved = frames_on_audio_clock(clip.frames, clip.fps, clock)
    assert moved.shape == clip.frames.shape and moved.dtype == clip.frames.dtype

    def flash_side(frames: np.ndarray, seconds: float) -> str | None:
        grey = frames[int(seconds * clip.fps)].astype(float).mean(-1)
        left, right = grey[:, : w // 2].max(), grey[:, w // 2 :].max()
        return None if max(left, right) < 200 else "left" if left > right else "right"

    for event in clip.meta["events"]:
        onset = event["time"] + delay_s
        assert flash_side(moved, onset + 0.01) == event["side"] == flash_side(moved, onset + 0.3)
        assert flash_side(clip.frames, event["time"] + 0.15) is None
    assert frames_on_audio_clock(clip.frames, clip.fps, audio_clock(mono, SR, clip.frames, clip.fps,
                                 Anchoring(enabled=False))) is clip.frames  # fmt: skip


def _match(*lags_ms: float, defined: bool = False, confidence: float = 0.3):
    """A match whose candidate lags are ``lags_ms`` (best first), candidate i pairing event 0 with onset i."""
    from avflow.eval.measure import Measure
    from avflow.eval.offset import SyncResult

    pairs = [np.array([[0, i]]) for i in range(len(lags_ms))]
    none, curve = np.zeros((0, 2), dtype=int), np.zeros(3)
    if defined:
        offset = Measure.of(lags_ms[0], confidence)
        return SyncResult(offset, pairs[0], curve, curve, float("nan"), 1.0, ((lags_ms[0], pairs[0]),))
    return SyncResult(Measure.undefined("ambiguous"), none, curve, curve, lags_ms[1], 0.0, tuple(zip(lags_ms, pairs)))


def test_an_ambiguous_offset_keeps_the_video_s_clock_where_one_of_its_lags_is_in_sync():
    """Of an ambiguous offset's lags, the one nearest 0 is taken (with its pairs) if it lies within the pairing
    tolerance of 0 (τ_fine + half a frame), else the best-scoring one; a defined offset is taken as it is (or not at
    all under `min_confidence`)."""
    from avflow.eval.offset import pairing_tolerance
    from avflow.pipelines.spatialise import anchoring_lag

    frame = 1 / 16
    edge = 1000 * pairing_tolerance(frame)  # 41.25 ms at 16 fps
    lag, pairs = anchoring_lag(_match(-240.2, 139.0, 6.0, -0.4), frame)  # a world clip's lags, best first
    assert lag == -0.4 and pairs.tolist() == [[0, 3]]
    assert anchoring_lag(_match(-240.2, 139.0, edge - 0.5), frame)[0] == edge - 0.5
    assert anchoring_lag(_match(-240.2, 139.0, edge + 0.5), frame)[0] == -240.2  # none in sync: the best-scoring
    assert anchoring_lag(_match(-240.2, 139.0, 20.0), 1 / 100)[0] == -240.2  # 15 ms at 100 fps
    assert anchoring_lag(_match(-240.2, -0.4), frame, Anchoring(in_sync=False))[0] == -240.2
    assert anchoring_lag(_match(-240.2, -0.4), frame, Anchoring(ambiguous=False)) is None
    assert anchoring_lag(_match(-20.0, defined=True), frame)[0] == -20.0  # defined: taken as measured
    assert anchoring_lag(_match(120.0, defined=True), frame, Anchoring(min_confidence=0.5)) is None
    with pytest.raises(ValueError, match="min_confidence"):
        Anchoring(min_confidence=-0.1)


def test_the_audio_clock_takes_the_in_sync_lag_of_an_ambiguous_match(monkeypatch):
    """Through `audio_clock`: a flash clip in sync whose match is made ambiguous, with a wrong lag scoring best,
    stays on the video's clock and anchors the flashes at their own onsets."""
    import avflow.eval.offset as offset
    from avflow.eval.measure import Measure
    from avflow.eval.offset import SyncResult
    from avflow.eval.synthetic import flash_clip
    from avflow.pipelines.spatialise import audio_clock

    clip = flash_clip(6, fps=25.0, duration=3.0, n_events=3, sample_rate=SR)
    mono = clip.audio.mean(0)
    real = offset.match_events

    def ambiguous(onsets, events, config=None, *, frame_period_s=0.0):
        right = real(onsets, events, config, frame_period_s=frame_period_s)
        assert right.offset_ms.defined and abs(right.offset_ms.value) < 10
        wrong = (right.offset_ms.value - 240.0, right.pairs[:1])  # best-scoring first, as match_events orders them
        candidates = (wrong, (right.offset_ms.value, right.pairs))
        return SyncResult(Measure.undefined("ambiguous"), right.pairs[:0], right.lags_ms, right.scores, -240.0, 0.0,
                          candidates)  # fmt: skip

    monkeypatch.setattr(offset, "match_events", ambiguous)
    clock = audio_clock(mono, SR, clip.frames, clip.fps)
    assert abs(clock.lag_s) < 0.01 and len(clock.anchors) == len(clip.meta["events"])
    assert all(abs(onset - event_s) < 0.03 for onset, event_s, _ in clock.anchors)
    assert audio_clock(mono, SR, clip.frames, clip.fps, Anchoring(in_sync=False)).lag_s < -0.2


def test_an_anchor_holds_until_the_next_anchored_or_contact_sound():
    """An anchored event's x holds from `lead_s` before its onset until `lead_s` before the next anchor's or
    release's (an onset paired with a contact) onset, `hold_s` at most; a release before it changes nothing. Over the
    released stretch the sound is placed by the tracker (here: the frames' object, on the right)."""
    from avflow.pipelines.spatialise import AudioClock, anchor_spans, audio_positions
    from avflow.world.binaural import block_times

    cfg = Anchoring(lead_s=0.03, hold_s=1.0)
    held = AudioClock(anchors=((0.5, 0.5, 10.0),))
    assert anchor_spans(held, cfg) == [(0.47, 1.5)]
    released = AudioClock(anchors=((0.5, 0.5, 10.0), (1.4, 1.4, 20.0)), releases=(0.2, 0.9))
    assert np.allclose(anchor_spans(released, cfg), [(0.47, 0.87), (1.37, 2.4)])
    assert np.allclose(anchor_spans(AudioClock(anchors=((0.5, 0.5, 10.0), (0.8, 0.8, 20.0)), releases=(0.9,)), cfg),
                       [(0.47, 0.77), (0.77, 0.87)])  # fmt: skip

    frames = np.full((32, 16, 64, 3), 40, dtype=np.uint8)  # 2 s at 16 fps, a square moving on the right
    for k in range(32):
        frames[k, 6:10, 40 + k // 2 : 44 + k // 2] = 220
    mono = np.zeros(2 * SR, dtype=np.float32)
    times = block_times(mono.size, SR)
    tracked = audio_positions(mono, SR, frames, 16.0, cfg, AudioClock())
    x = audio_positions(mono, SR, frames, 16.0, cfg, AudioClock(anchors=((0.5, 0.5, 10.0),), releases=(0.9,)))
    span = (times >= 0.47) & (times < 0.87)
    assert np.all(x[span] == 10.0) and np.array_equal(x[~span], tracked[~span]) and np.all(tracked > 40)


def test_the_audio_clock_releases_anchors_at_onsets_paired_with_contacts(monkeypatch):
    """Events flash, contact, flash with a click at each: the flashes are anchors, the contact's onset a release."""
    import avflow.eval.events as events_module
    from avflow.eval.events import VisualEvents
    from avflow.pipelines.spatialise import audio_clock

    times = np.array([0.5, 0.9, 1.4])
    kinds = np.array(["flash", "contact", "flash"], dtype=object)
    seen = VisualEvents(times=times, kinds=kinds, x=np.array([10.0, 50.0, 20.0]), width=64, curve=np.zeros(32))
    monkeypatch.setattr(events_module, "detect", lambda frames, fps: (seen, None))
    rng = np.random.default_rng(0)
    mono = 1e-4 * rng.standard_normal(2 * SR)
    for t in times:
        k = int(t * SR)
        mono[k : k + 400] += 0.5 * rng.standard_normal(400) * np.exp(-np.arange(400) / 80)
    clock = audio_clock(mono, SR, np.zeros((32, 16, 64, 3), dtype=np.uint8), 16.0)
    assert abs(clock.lag_s) < 0.005
    assert [(round(e, 3), x) for _, e, x in clock.anchors] == [(0.5, 10.0), (1.4, 20.0)]
    assert len(clock.releases) == 1 and abs(clock.releases[0] - 0.9) < 0.01


def test_each_onset_takes_the_object_hit_in_its_frame_as_the_source():
    """Two tracked objects, one hit in frame 8 and the other in frame 20: from `lead_s` before the onset at frame 8's
    time the first is the source (followed as it moves), from `lead_s` before the one at frame 20 the second; an
    onset where nothing is hit (frame 14) and a later onset of the same object's sound change nothing; the onsets
    are read on the video's clock (`lag_s` earlier); with one object tracked there is nothing to choose."""
    from avflow.pipelines.spatialise import onset_sources

    fps, t = 16.0, 32
    k = np.arange(t, dtype=np.float64)
    centers = np.zeros((t, 2, 2))
    centers[:, 0, 0], centers[:, 1, 0] = 10.0 + 0.25 * k, 50.0  # x: the first drifts right, the second stays
    centers[:, 0, 1] = 30.0 - np.abs(k - 8)  # y: a bounce (a kink) in frame 8
    centers[:, 1, 1] = 30.0 - np.abs(k - 20)  # and in frame 20
    centers[25:, 1] = np.nan  # the second leaves the view
    times = np.arange(0.0, 2.0, 0.01)
    for lag in (0.0, 0.15):
        onsets = np.array([8, 11, 14, 20]) / fps + lag
        x = onset_sources(centers, fps, onsets, times, lag_s=lag, lead_s=0.03)
        first = (times >= 8 / fps + lag - 0.03) & (times < 20 / fps + lag - 0.03)
        assert np.all(np.isnan(x[times < 8 / fps + lag - 0.03]))
        assert np.allclose(x[first], 10.0 + 0.25 * fps * (times[first] - lag))  # followed as it moves
        assert np.allclose(x[times >= 20 / fps + lag - 0.03], 50.0)  # held where it is no longer seen
    assert np.all(np.isnan(onset_sources(centers[:, :1], fps, np.array([0.5]), times)))


def test_the_model_reads_the_video_on_the_given_mono_s_clock(monkeypatch):
    """With a mono, the frames the model's conditions are made from are the audio clock's; without anchoring, or
    without a mono, the video's own."""
    from avflow.eval.synthetic import flash_clip
    from avflow.pipelines.spatialise import audio_clock, frames_on_audio_clock

    clip = flash_clip(5, audio_delay_s=0.2, fps=25.0, duration=2.0, n_events=2, sample_rate=SR)
    mono, n = clip.audio.mean(0), clip.audio.shape[1]
    seen = []
    pipe = BinauralPipeline(tiny_model(), tiny_codecs().audio)
    original = pipe.conditions
    monkeypatch.setattr(pipe, "conditions", lambda frames, *a: seen.append(frames) or original(frames, *a))
    one = pipe.sampling.override(steps=1)
    pipe.generate(clip.frames, clip.fps, n, mono=mono, sampling=one)
    expected = frames_on_audio_clock(clip.frames, clip.fps, audio_clock(mono, SR, clip.frames, clip.fps))
    assert np.array_equal(seen[-1], expected) and not np.array_equal(expected, clip.frames)
    pipe.anchoring = Anchoring(enabled=False)
    pipe.generate(clip.frames, clip.fps, n, mono=mono, sampling=one)
    pipe.anchoring = Anchoring()
    pipe.generate(clip.frames, clip.fps, n, sampling=one)
    assert seen[-2] is clip.frames and seen[-1] is clip.frames


def _inputs(tmp_path: Path, mono_seconds: float = 1.25) -> tuple[Path, Path]:
    from avflow.data.media import write_audio, write_video

    frames = np.repeat(np.repeat(moving_square(t=20, h=16, w=32), 2, axis=1), 2, axis=2)  # (20, 32, 64, 3)
    own = np.random.default_rng(0).standard_normal((1, int(1.25 * SR))).astype(np.float32) * 0.05
    src = write_video(tmp_path / "in.mp4", frames, 16, audio=own, sample_rate=SR)
    mono = np.random.default_rng(1).standard_normal((1, int(mono_seconds * 22050))).astype(np.float32) * 0.05
    return src, write_audio(tmp_path / "mono.wav", mono, 22050)  # another sample rate: resampled


def test_a_model_of_your_own_is_used_with_model(tmp_path, capsys):
    """`avflow binaural --model FILE` runs a binaural export of one's own (none is installed) on the shipped codecs;
    a file that is not one is a one-line error before any media is read."""
    from avflow.cli import main
    from avflow.codecs.world import load_world_codecs
    from avflow.data.media import probe

    codecs = load_world_codecs()
    torch.manual_seed(0)
    model = BinauralFlow(BinauralConfig(latent_dim=codecs.audio.latent_channels, dim=32, depth=2, heads=2, bins=8))
    mine = tmp_path / "mine.safetensors"
    save_binaural(model, mine, codecs_checksum=codecs.checksum)
    src, _ = _inputs(tmp_path)
    out = tmp_path / "out.mp4"
    assert main(["binaural", str(src), "-o", str(out), "--model", str(mine), "--steps", "2", "--audio", "replace"]) == 0
    assert "(model, " in capsys.readouterr().out
    assert probe(out).audio_channels == 2 and abs(probe(out).duration - probe(src).duration) < 0.05
    not_one = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, not_one)
    for path, message in ((not_one, "not a binaural model checkpoint (no model config"),
                          (tmp_path, "is a folder; give the .safetensors file")):  # fmt: skip
        assert main(["binaural", str(src), "-o", str(tmp_path / "o2.mp4"), "--model", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


@pytest.mark.parametrize("installed", [False, True])
def test_a_silent_video_names_only_ways_that_exist(tmp_path, monkeypatch, capsys, installed: bool):
    """A silent video has nothing to spatialise: the error offers --mono, and the model only where it is installed
    (it sent users from spatialise to a model that was not there, and back)."""
    from avflow.cli import main
    from avflow.data.media import write_video
    from avflow.models import binaural

    marker = tmp_path / "model.safetensors"
    if installed:
        marker.write_bytes(b"")
    monkeypatch.setattr(binaural, "MODEL_FILE", marker)
    silent = write_video(tmp_path / "silent.mp4", moving_square(t=20), 16)
    assert main(["binaural", str(silent), "-o", str(tmp_path / "o.mp4"), "--mode", "spatialise"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no audio track to spatialise; give --mono FILE" in err and "\n" not in err
    assert ("or use --mode model" in err) == installed


@pytest.mark.parametrize("mode, mono", [("spatialise", False), ("spatialise", True), ("model", True),
                                        ("model", False)])  # fmt: skip
def test_cli_writes_stereo_mp4_of_the_video_duration(tmp_path, monkeypatch, capsys, mode: str, mono: bool):
    from avflow.cli import main
    from avflow.data.media import probe, read_audio
    from avflow.models import binaural

    monkeypatch.setattr(binaural, "MODEL_FILE", tmp_path / "in.mp4")  # "installed": a file exists there
    tiny = classmethod(lambda cls, *a, **k: cls(tiny_model(), tiny_codecs().audio))
    monkeypatch.setattr(BinauralPipeline, "from_assets", tiny)
    src, mono_file = _inputs(tmp_path)
    out = tmp_path / "out.mp4"
    extra = ["--mono", str(mono_file)] if mono else []
    steps = ["--steps", "2"] if mode == "model" else []  # spatialising samples nothing: --steps there is an error
    assert main(["binaural", str(src), "-o", str(out), "--mode", mode, *steps, *extra]) == 0
    printed = capsys.readouterr().out
    assert "its audio track kept as track 2 (--audio keep)" in printed and ("from --mono" in printed) == mono
    info = probe(out)
    assert info.has_audio and info.audio_channels == 2 and info.audio_tracks == 2  # the new track, then the video's
    audio, sr = read_audio(out)
    assert audio.shape[0] == 2 and abs(audio.shape[1] / sr - probe(src).duration) < 1e-3
    assert sr == (16000 if mode == "model" else 22050 if mono else SR)  # a spatialised sound keeps its rate


def test_a_mono_longer_than_the_video_is_said_to_be_cut(tmp_path, capsys):
    """The track is the video's length: of a longer --mono only its first seconds are used, and the command's line
    says so (it was cut without a word; a mono of the video's length within rounding says nothing)."""
    from avflow.cli import main

    src, mono_file = _inputs(tmp_path, mono_seconds=4.0)
    assert main(["binaural", str(src), "-o", str(tmp_path / "o.mp4"), "--mode", "spatialise", "--mono",
                 str(mono_file)]) == 0  # fmt: skip
    assert "from --mono (its first 1.25 s of 4.00 s: the video's length)" in capsys.readouterr().out
    src, mono_file = _inputs(tmp_path, mono_seconds=1.26)
    assert main(["binaural", str(src), "-o", str(tmp_path / "o.mp4"), "--mode", "spatialise", "--mono",
                 str(mono_file), "-y"]) == 0  # fmt: skip
    assert "from --mono, 1.25 s" in capsys.readouterr().out


def test_a_video_mixed_with_its_own_spatialised_copy_is_refused_and_a_silent_sound_is_said(tmp_path, capsys):
    """Spatialising the video's own audio with `--audio mix` would add the sound to itself at two interaural delays
    (a comb filter): one line, nothing written; a silent --mono gives a silent track, and a note says so."""
    from avflow.cli import main
    from avflow.data.media import write_audio

    src, _ = _inputs(tmp_path)
    out = tmp_path / "o.mp4"
    assert main(["binaural", str(src), "-o", str(out), "--mode", "spatialise", "--audio", "mix"]) == 2
    assert "would add the video's sound to its own spatialised copy" in capsys.readouterr().err and not out.exists()
    silence = write_audio(tmp_path / "silence.wav", np.zeros((1, 2 * SR), np.float32), SR)
    assert main(["binaural", str(src), "-o", str(out), "--mode", "spatialise", "--mono", str(silence)]) == 0
    assert "note: " + str(silence) + ": the sound is silent (peak below -90 dBFS)" in capsys.readouterr().err


def test_a_cue_model_on_a_video_too_long_for_v2a_is_refused_before_the_default_model(tmp_path, monkeypatch):
    """A cue model places a sound the default model's v2a makes, which takes at most 60 s: a longer video without
    --mono is refused before that model loads or a frame is read (it failed after both, naming a --duration that
    `avflow binaural` does not have)."""
    from avflow.data import media
    from avflow.data.media import write_video
    from avflow.errors import MediaError
    from avflow.pipelines import binaural

    monkeypatch.setattr(BinauralPipeline, "from_assets", classmethod(lambda cls, *a, **k: cls(tiny_model(),
                                                                                         tiny_codecs().audio)))
    monkeypatch.setattr(BinauralPipeline, "needs_mono", property(lambda self: True))
    monkeypatch.setattr(binaural, "v2a_mono", lambda *a, **k: pytest.fail("the default model was loaded"))
    monkeypatch.setattr(media, "video_frames", lambda *a, **k: pytest.fail("frames were read"))
    long = write_video(tmp_path / "long.mp4", np.zeros((124, 16, 16, 3), np.uint8), 2)  # 62 s at 2 fps
    with pytest.raises(MediaError, match=r"long.mp4: the video is 62.0 s long, .* at most 60 s: give --mono FILE"):
        binaural.binaural_track(long, mode="model")


def test_a_spatialised_sound_keeps_its_rate_and_its_top_octaves(tmp_path):
    """The spatialiser renders at the sound's own rate within 16-48 kHz: a 48 kHz noise keeps its energy above
    8 kHz in both ears (a 16 kHz track would have none); rates outside are brought within."""
    from avflow.data.media import write_audio, write_video
    from avflow.pipelines.binaural import binaural_track, spatialise_rate

    assert [spatialise_rate(r) for r in (None, 8000, 22050, 48000, 96000)] == [16000, 16000, 22050, 48000, 48000]
    frames = np.repeat(np.repeat(moving_square(t=20, h=16, w=32), 2, axis=1), 2, axis=2)  # (20, 32, 64, 3)
    src = write_video(tmp_path / "in.mp4", frames, 16)
    noise = np.random.default_rng(2).standard_normal((1, int(1.3 * 48000))).astype(np.float32) * 0.1
    track = binaural_track(src, mode="spatialise", mono=write_audio(tmp_path / "mono.wav", noise, 48000))
    assert track.sample_rate == 48000 and abs(track.audio.shape[1] / 48000 - track.duration) < 1e-3
    spectrum = np.abs(np.fft.rfft(track.audio, axis=-1)) ** 2  # (2, F)
    freqs = np.fft.rfftfreq(track.audio.shape[1], 1 / 48000)
    assert np.all(spectrum[:, freqs > 9000].sum(-1) > 0.2 * spectrum.sum(-1))  # white noise: ~60 % above 9 kHz


@pytest.mark.parametrize("case, message", [("missing", "--mono .*: file not found"),
                                           ("folder", "--mono .*: is a folder; give a sound file"),
                                           ("short", "shorter than the video")])  # fmt: skip
def test_cli_mono_errors_are_one_line_before_any_weights(tmp_path, monkeypatch, capsys, case: str, message: str):
    import re

    from helpers import WeightReads

    from avflow.cli import main

    src, mono_file = _inputs(tmp_path, mono_seconds=0.8)
    reads = WeightReads(monkeypatch)
    mono = {"missing": tmp_path / "absent.wav", "folder": tmp_path}.get(case, mono_file)
    code = main(["binaural", str(src), "-o", str(tmp_path / "out.mp4"), "--mode", "model", "--mono", str(mono)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and re.search(message, err), err
    assert reads.calls == [] and not (tmp_path / "out.mp4").exists()


def test_real_recording_sides_count_the_louder_channel_at_each_sided_event():
    """benchmarks/binaural.py --real: a click 6 dB louder (and leading) in the left ear at a left event reads right,
    the same click at a right event reads wrong, mirrored ears the other way round; an event without a side is not
    counted, one where nothing sounds counts neither right nor wrong, nor does a mono copy."""
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    bench = importlib.import_module("binaural")
    sr = 16000
    rng = np.random.default_rng(0)
    audio = 1e-4 * rng.standard_normal((2, 2 * sr)).astype(np.float32)  # (2, S): quiet noise floor
    click = np.hanning(64).astype(np.float32) * rng.standard_normal(64).astype(np.float32)
    for t in (0.5, 0.9, 1.2, 1.6):  # sounds at 0.5 and 0.9 s (left events), 1.2 s (right event), 1.6 s (no side)
        i = int(t * sr)
        audio[0, i : i + 64] += 0.5 * click
        audio[1, i + 8 : i + 72] += 0.25 * click  # right ear 6 dB quieter and 0.5 ms late: a left source
    events = [
        {"audio_time": 0.5, "onsets": [0.0], "side": "left"},
        {"audio_time": 0.9, "onsets": [0.0], "side": "left"},
        {"audio_time": 1.2, "onsets": [0.0], "side": "right"},
        {"audio_time": 1.6, "onsets": [0.0]},
        {"audio_time": 1.9, "onsets": [0.0], "side": "left"},  # nothing sounds there
    ]
    counts = bench.real_event_sides(audio, sr, {"events": events})
    assert counts == {"louder_right": 2, "louder_wrong": 1, "side_right": 2, "side_wrong": 1, "events": 4}
    mirrored = bench.real_event_sides(audio[::-1].copy(), sr, {"events": events})
    assert mirrored == {"louder_right": 1, "louder_wrong": 2, "side_right": 1, "side_wrong": 2, "events": 4}
    mono = audio.mean(0)
    assert bench.real_event_sides(np.stack([mono, mono]), sr, {"events": events}) == {
        "louder_right": 0, "louder_wrong": 0, "side_right": 0, "side_wrong": 0, "events": 4}
