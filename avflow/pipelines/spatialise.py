"""Spatialise a mono track from its video: find where the sound's object is over time, render it binaurally.

Position: objects are tracked (`avflow.eval.physics.track_objects`); each object's impact score is the size of its
acceleration (second difference of its centre; bounces and collisions), held with a 0.15 s exponential decay (the
ring of an impact); the source is the score-weighted mean of the objects' x. Where no object has a score (or nothing
is tracked), the horizontal centroid of the frame-difference energy (what moves makes the sound) is used, then the
foreground's centroid, then the nearest known position. Where two or more objects are tracked, on the sound's own
clock (:func:`onset_sources`), each onset of the mono where an object is hit (in the onset's frame) makes that object
the source, followed as it moves, until an onset where another is hit: a new sound starts at an onset, and it is one
object's, where the weighted mean put two objects' sounds between them.

Anchoring (:class:`Anchoring`): the track above is on the video's clock, and a sound need not be. The mono's onsets are
matched to the video's events (flashes, appearances, cuts, contacts: `avflow.eval.offset.match_events`, as `avflow eval`
measures sync); where flashes or appearances are among the pairs, the track is moved onto the audio's clock by the
offset found, and each onset paired with one takes that event's x (a cut or full-frame flash: the centre) from
``lead_s`` before it until the next such onset or the next onset paired with a contact, ``hold_s`` at most. Contacts
keep the tracker's position (it follows the object after the bounce; an object read as a flash and held over its later
bounces put a world clip's bounces at the wrong wall), and a match of contacts alone moves nothing: bounces are often
periodic, their lag ambiguous, and on the world's clips (in sync) the tracker was right where a wrong lag would move it.
Where the offset is ambiguous between lags, one of them is used (:func:`anchoring_lag`): `avflow eval` reads no side
there, but a renderer has to put the sound somewhere, and the tracker alone is near chance on such clips (a flash has no
object to track, so its sound took whatever moved at that time). A lag within the pairing tolerance of 0 is preferred
(`avflow.eval.offset.pairing_tolerance`: τ_fine plus half a frame, as near 0 as frame-quantised events can say): the
video's own clock then explains the events as well as the others, and a mono given with its video is in sync unless its
events say otherwise (a white object read as a flash over a dense ambience moved a world clip's whole track by −240 ms);
else the best-scoring lag. Measured in docs/binaural.md. `audio_clock` is that matching (the lag and the anchored
onsets); `frames_on_audio_clock` applies it to the frames themselves, for the binaural model, which reads the video
rather than a track (`avflow.pipelines.binaural`).

Rendering: the world's spherical head (`avflow.world.binaural.render_sphere`: Woodworth ITD + Brown-Duda head
shadow) with the azimuth updated per 128-sample block. Also the amplitude panner used as a baseline (level only, no
time difference), on the same positions.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from avflow.errors import MediaError
from avflow.eval.inputs import check_frames
from avflow.world.binaural import FIELD_OF_VIEW, azimuth_deg, block_times, render_sphere

IMPACT_FLOOR = 0.05  # px per frame²: an object's acceleration above this is an impact (below: tracking jitter)
MIN_SAMPLE_RATE = 1000  # Hz: the onset bands start at 60 Hz; a lower rate is a mistake (16 for 16 kHz)

if TYPE_CHECKING:
    from avflow.eval.offset import SyncResult


def mono_track(mono: np.ndarray) -> np.ndarray:
    """A mono track (N,) or (1, N) as float64 (N,); any other shape (a stereo pair) is a one-line MediaError."""
    track = np.asarray(mono, dtype=np.float64)
    if track.ndim == 2 and track.shape[0] == 1:
        track = track[0]
    if track.ndim != 1:
        raise MediaError(f"mono must be (N,) or (1, N) samples, got shape {track.shape} (mix a stereo pair down first)")
    return track


def check_render_inputs(mono: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float
                        ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(mono track, frames) for the renderers, or a one-line MediaError for what they would misread silently or fail
    on deep inside: frames must be uint8 (T, H, W, 3) with T >= 1 (float frames in [0, 1] were read as black:
    nothing tracked, the sound centred), fps finite and > 0 (a negative one swapped the sides), sample_rate a whole
    number of Hz >= MIN_SAMPLE_RATE, and the frames must last as long as the sound, within one frame (past the last
    frame the position is only held). Frames past the sound's end are fine: the sound is the video's first seconds
    (`avflow foley --duration` shorter than the video), and they only help the tracking."""
    track = mono_track(mono)
    try:
        frames = check_frames(frames)  # (T, H, W, 3) uint8, the metrics' own check
    except ValueError as exc:
        raise MediaError(str(exc)) from None
    if frames.shape[0] < 1:
        raise MediaError(f"frames: expected at least one frame, got shape {frames.shape}")
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not (math.isfinite(fps) and fps > 0):
        raise MediaError(f"fps must be a finite number > 0, got {fps!r}")
    whole = isinstance(sample_rate, numbers.Real) and not isinstance(sample_rate, bool) and sample_rate % 1 == 0
    if not (whole and sample_rate >= MIN_SAMPLE_RATE):
        raise MediaError(f"sample_rate must be a whole number of Hz >= {MIN_SAMPLE_RATE} (16 kHz is 16000), got "
                         f"{sample_rate!r}")  # fmt: skip
    video_s, sound_s = frames.shape[0] / fps, track.size / sample_rate
    if video_s + 1 / fps < sound_s - 1e-9:
        raise MediaError(f"the frames last {video_s:g} s ({frames.shape[0]} at {fps:g} fps) and the sound "
                         f"{sound_s:g} s: give frames for all of the sound (more are fine)")  # fmt: skip
    return track, frames


def object_centers(frames: np.ndarray) -> np.ndarray:
    """(T, K, 2) tracked object centres (x, y) in pixels, NaN where an object is not visible."""
    from avflow.eval.physics import track_objects

    return track_objects(frames).centers


def accelerations(centers: np.ndarray) -> np.ndarray:
    """(T, K) size of each object's acceleration (px per frame², second difference of its centre; 0 where unknown)."""
    acc = np.zeros(centers.shape[:2])
    if centers.shape[0] >= 3:
        acc[1:-1] = np.linalg.norm(centers[2:] - 2 * centers[1:-1] + centers[:-2], axis=-1)
    return np.nan_to_num(acc)


def impact_positions(frames: np.ndarray, fps: float, decay_s: float = 0.15, centers: np.ndarray | None = None
                     ) -> np.ndarray:  # fmt: skip
    """(T,) x of the object(s) that last hit something, NaN where no tracked object has an impact score;
    `centers`: the frames' :func:`object_centers` when the caller has them."""
    c = object_centers(frames) if centers is None else centers  # (T, K, 2)
    t = c.shape[0]
    if c.shape[1] == 0 or t < 3:
        return np.full(t, np.nan)
    acc = accelerations(c)
    score = np.zeros_like(acc)
    decay = np.exp(-1.0 / (fps * decay_s))
    for k in range(t):
        score[k] = np.maximum(acc[k], score[k - 1] * decay if k else 0.0)
    x = np.nan_to_num(c[..., 0])
    score = np.where(np.isnan(c[..., 0]), 0.0, score)
    mass = score.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > IMPACT_FLOOR, (score * x).sum(1) / mass, np.nan)


# Frames are read a chunk of about this many pixels at a time (frames × H × W, or rows of all frames for a temporal
# median): float64 grey copies of the whole video (grey, motion, foreground) took 132 MB per minute of 64 px frames.
# Every quantity is per frame, per pair of frames or per pixel, so the result is the whole clip's, bit for bit.
CHUNK_PIXELS = 1 << 20


def _frame_chunks(t: int, h: int, w: int) -> list[slice]:
    step = max(1, CHUNK_PIXELS // max(1, h * w))
    return [slice(a, min(a + step, t)) for a in range(0, t, step)]


def _grey(frames: np.ndarray, dtype=np.float64, unit: bool = True) -> np.ndarray:
    """(t, H, W, 3) uint8 -> (t, H, W) grey as ``dtype``: the mean of the channels, / 255 with ``unit``."""
    grey = np.asarray(frames, dtype=dtype).mean(-1)
    return grey / 255.0 if unit else grey


def grey_median(frames: np.ndarray, dtype=np.float64, unit: bool = True) -> np.ndarray:
    """(H, W) per-pixel temporal median of the frames' :func:`_grey`, computed over a few rows of every frame at a
    time: ``np.median(_grey(frames), axis=0)`` exactly, without the whole video's grey copy."""
    t, h, w = frames.shape[:3]
    rows = max(1, CHUNK_PIXELS // max(1, t * w))
    return np.concatenate([np.median(_grey(frames[:, r : r + rows], dtype, unit), axis=0) for r in range(0, h, rows)])


def source_positions(frames: np.ndarray, fps: float | None = None, smooth: int = 1,
                     centers: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """(T, H, W, 3) uint8 frames -> (T,) horizontal source position in pixels (frame k shown at k / fps); with fps,
    the impact-weighted object position is preferred (`centers`: as for :func:`impact_positions`). Read a chunk of
    frames at a time (:data:`CHUNK_PIXELS`)."""
    t, h, w = frames.shape[:3]
    xs = np.arange(w) + 0.5
    median = grey_median(frames)  # (H, W)
    first_motion = np.abs(np.diff(_grey(frames[:2]), axis=0))[0] if t > 1 else None  # frame 0 takes frame 1's
    x = np.full(t, np.nan)
    for part in _frame_chunks(t, h, w):
        a, b = part.start, part.stop
        grey = _grey(frames[max(a - 1, 0) : b])  # with the frame before the chunk, for the motion
        motion = np.abs(np.diff(grey, axis=0))  # (b - max(a - 1, 0) - 1, H, W): frames max(a, 1)..b-1
        if a == 0:
            motion = np.concatenate([(first_motion if first_motion is not None else np.zeros((h, w)))[None],
                                     motion])  # fmt: skip
        else:
            grey = grey[1:]
        fg = np.abs(grey - median)
        seg = x[part]  # a view: written in place
        for weights, floor in ((fg, 1e-3), (motion, 1e-3)):  # motion overrides the foreground where there is motion
            col = np.where(weights > 0.02, weights, 0.0).sum(axis=1)  # (t, W)
            mass = col.sum(axis=1)
            ok = mass > floor * h * w
            seg[ok] = (col[ok] * xs).sum(axis=1) / mass[ok]
        del grey, motion, fg
    if fps is not None:
        impact = impact_positions(frames, fps, centers=centers)
        x = np.where(np.isnan(impact), x, impact)
    known = np.flatnonzero(~np.isnan(x))
    if known.size == 0:
        return np.full(t, w / 2.0)
    x = np.interp(np.arange(t), known, x[known])
    if smooth > 0 and t > 2 * smooth:
        kernel = np.ones(2 * smooth + 1) / (2 * smooth + 1)
        x = np.convolve(np.pad(x, smooth, mode="edge"), kernel, mode="valid")
    return x


@dataclass(frozen=True, kw_only=True)
class Anchoring:
    """How the mono's onsets matched to the video's events place the source (see the module docstring)."""

    enabled: bool = True
    min_confidence: float = 0.0  # defined offsets measured with less confidence move nothing
    ambiguous: bool = True  # an ambiguous offset's lags are used (`anchoring_lag`): a sound must be put somewhere
    in_sync: bool = True  # of those, one within the pairing tolerance of 0 is preferred to the best-scoring
    lead_s: float = 0.03  # an anchored position starts this long before its onset (onsets are read to a few ms)
    hold_s: float = 1.0  # and lasts until the next anchored onset, this long at most

    def __post_init__(self) -> None:
        if not (self.min_confidence >= 0 and self.lead_s >= 0 and self.hold_s > 0):
            raise ValueError("anchoring needs min_confidence and lead_s >= 0, and hold_s > 0")


@dataclass(frozen=True, kw_only=True)
class AudioClock:
    """Where a mono's sounds sit against its video: `lag_s` (positive = audio late) moves the video onto the audio's
    clock, and each anchor (onset s, event s, event x px) holds an event's place from ``lead_s`` before its onset
    until the next anchor or release (an onset s paired with a contact, whose sound the tracker places;
    :func:`anchor_spans`). Lag 0 and no anchors: the video's own clock. `onsets`: the mono's onset times (s) as the
    match read them, for :func:`audio_positions` (None: not read)."""

    lag_s: float = 0.0
    anchors: tuple[tuple[float, float, float], ...] = ()
    releases: tuple[float, ...] = ()
    onsets: tuple[float, ...] | None = None


def audio_clock(
    mono: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float, anchoring: Anchoring | None = None
) -> AudioClock:
    """The mono's onsets matched to the video's events (see the module docstring): the lag and the anchored onsets,
    or the video's own clock where anchoring is off, nothing matched, or only contacts did."""
    from avflow.eval.events import detect
    from avflow.eval.offset import match_events
    from avflow.eval.onsets import audio_onsets

    cfg = anchoring or Anchoring()
    if not cfg.enabled or len(frames) < 2:
        return AudioClock()
    events, _ = detect(frames, fps)  # x in pixels of `frames`
    onsets = audio_onsets(mono_track(mono), sample_rate)
    read = tuple(float(t) for t in onsets.times)
    chosen = anchoring_lag(match_events(onsets, events, frame_period_s=1.0 / fps), 1.0 / fps, cfg)
    if chosen is None:
        return AudioClock(onsets=read)
    lag_ms, pairs = chosen
    releases = tuple(sorted(float(onsets.times[o]) for e, o in pairs if events.kinds[e] == "contact"))
    pairs = sorted((float(onsets.times[o]), int(e)) for e, o in pairs if events.kinds[e] != "contact")
    if not pairs:  # bounces only: the tracker follows them on the video's clock, and their lags are often periodic
        return AudioClock(onsets=read)
    anchors = tuple((onset, float(events.times[e]), float(events.x[e]) if np.isfinite(events.x[e])
                     else events.width / 2.0) for onset, e in pairs)  # fmt: skip
    return AudioClock(lag_s=lag_ms / 1000.0, anchors=anchors, releases=releases, onsets=read)


def anchoring_lag(
    match: SyncResult, frame_period_s: float, anchoring: Anchoring | None = None
) -> tuple[float, np.ndarray] | None:
    """The lag (ms) and the (event, onset) pairs the anchoring takes from a match made at ``frame_period_s``, or None
    for the video's own clock: a defined offset of at least ``min_confidence``; of an ambiguous one's candidates the
    nearest 0 if it lies within the pairing tolerance of 0, else the best-scoring (see the module docstring)."""
    from avflow.eval.offset import pairing_tolerance

    cfg = anchoring or Anchoring()
    offset = match.offset_ms
    if offset.defined:
        return (offset.value, match.pairs) if offset.confidence >= cfg.min_confidence else None
    if not cfg.ambiguous or not match.candidates:
        return None
    nearest = min(match.candidates, key=lambda c: abs(c[0]))
    in_sync = cfg.in_sync and abs(nearest[0]) <= 1000.0 * pairing_tolerance(frame_period_s)
    return nearest if in_sync else match.candidates[0]


def anchor_spans(clock: AudioClock, anchoring: Anchoring | None = None) -> list[tuple[float, float]]:
    """Per anchor, the seconds [start, stop) it holds: from ``lead_s`` before its onset until ``lead_s`` before the
    next anchor's or release's onset, ``hold_s`` after its onset at most."""
    cfg = anchoring or Anchoring()
    onsets = [a[0] for a in clock.anchors]
    ends = np.sort(np.asarray(onsets + list(clock.releases), dtype=np.float64))  # where the next sound takes over

    def stop(onset: float) -> float:
        later = ends[ends > onset]
        return min(onset + cfg.hold_s, float(later[0]) - cfg.lead_s if later.size else np.inf)

    return [(onset - cfg.lead_s, stop(onset)) for onset in onsets]


def onset_sources(centers: np.ndarray, fps: float, onsets_s: np.ndarray, times: np.ndarray, lag_s: float = 0.0,
                  lead_s: float = 0.0) -> np.ndarray:  # fmt: skip
    """(B,) x at `times` (s, on the audio's clock) of the object hit at an onset, followed as it moves, from `lead_s`
    before that onset until `lead_s` before the next onset where another object is hit; NaN before the first. An
    onset (`onsets_s`, audio clock) is read in the frame nearest its time on the video's clock (`lag_s` earlier): the
    object with the largest acceleration over `IMPACT_FLOOR` there is hit; where none is (an echo, the ambience, a
    later onset of one sound) the source holds. With fewer than two objects tracked there is nothing to choose: all
    NaN (the impact-weighted track stays). `centers`: (T, K, 2) :func:`object_centers`."""
    t, k = centers.shape[:2]
    out = np.full(times.size, np.nan)
    if k < 2 or t < 3:
        return out
    acc = accelerations(centers)  # (T, K)
    frame_times = np.arange(t) / fps
    switches: list[tuple[float, int]] = []  # (onset s, object) where the source changes
    for onset in np.asarray(onsets_s, dtype=np.float64):
        frame = int(round((onset - lag_s) * fps))
        if 0 <= frame < t and acc[frame].max() > IMPACT_FLOOR:
            hit = int(acc[frame].argmax())
            if not switches or switches[-1][1] != hit:
                switches.append((float(onset), hit))
    for n, (onset, hit) in enumerate(switches):
        stop = switches[n + 1][0] - lead_s if n + 1 < len(switches) else np.inf
        span = (times >= onset - lead_s) & (times < stop)
        x, seen = centers[:, hit, 0], ~np.isnan(centers[:, hit, 0])
        if span.any() and seen.any():
            out[span] = np.interp(times[span] - lag_s, frame_times[seen], x[seen])
    return out


def audio_positions(
    mono: np.ndarray,
    sample_rate: int,
    frames: np.ndarray,
    fps: float,
    anchoring: Anchoring | None = None,
    clock: AudioClock | None = None,
) -> np.ndarray:
    """(B,) source x in pixels at the renderer's block centres (:func:`block_times`) of the mono (N,), on the
    audio's clock: the frames' track moved by the measured offset, the object hit at each of the mono's onsets from
    then on (:func:`onset_sources`), flashes' sounds anchored at their events. `clock`: the `audio_clock` of this
    mono and video when the caller has it already (else it is measured)."""
    from avflow.eval.onsets import audio_onsets

    cfg = anchoring or Anchoring()
    times = block_times(mono_track(mono).size, sample_rate)  # (B,)
    centers = object_centers(frames)  # (T, K, 2)
    x_video = source_positions(frames, fps, centers=centers)  # (T,) on the video's clock
    frame_times = np.arange(len(x_video)) / fps
    clock = clock if clock is not None else audio_clock(mono, sample_rate, frames, fps, anchoring)
    x = np.interp(times - clock.lag_s, frame_times, x_video)
    onsets = (
        clock.onsets if clock.onsets is not None else audio_onsets(mono_track(mono), sample_rate).times
    )  # read once where the clock read them
    hit = onset_sources(centers, fps, np.asarray(onsets), times, clock.lag_s, cfg.lead_s)  # (B,)
    x = np.where(np.isnan(hit), x, hit)
    for (start, stop), (_, _, event_x) in zip(anchor_spans(clock, anchoring), clock.anchors):
        x[(times >= start) & (times < stop)] = event_x
    return x


def frames_on_audio_clock(frames: np.ndarray, fps: float, clock: AudioClock, anchoring: Anchoring | None = None,
                          peak_frames: int = 5) -> np.ndarray:  # fmt: skip
    """(T, H, W, 3) frames -> the same count on the audio's clock: frame k shows the frame nearest its time minus the
    lag, and over an anchor's span the event's brightest frame (of the ``peak_frames`` from its start), held, so a
    model reading the video sees a short flash where and while its sound is, as the spatialiser places it."""
    t = frames.shape[0]
    if clock.lag_s == 0 and not clock.anchors:
        return frames
    starts = np.arange(t) / fps  # frame k starts at k / fps (the events' convention)
    index = np.clip(np.round((starts - clock.lag_s) * fps).astype(int), 0, t - 1)  # (T,)
    median = grey_median(frames, np.float32, unit=False)  # (H, W), chunk by chunk
    brightness = np.zeros(t, dtype=np.float32)  # (T,) brightened amount
    for part in _frame_chunks(t, *frames.shape[1:3]):
        grey = np.asarray(frames[part], dtype=np.float32).mean(-1)
        brightness[part] = (grey - median).clip(min=0).sum(axis=(1, 2))
    for (start, stop), (_, event_s, _) in zip(anchor_spans(clock, anchoring), clock.anchors):
        first = int(np.clip(round(event_s * fps), 0, t - 1))
        peak = first + int(brightness[first : first + peak_frames].argmax())
        index[(starts + 0.5 / fps >= start) & (starts + 0.5 / fps < stop)] = peak
    return frames[index]


def spatialise(
    mono: np.ndarray,
    sample_rate: int,
    frames: np.ndarray,
    fps: float,
    anchoring: Anchoring | None = None,
    clock: AudioClock | None = None,
) -> np.ndarray:
    """Mono (N,) + its video frames (T, H, W, 3) uint8 -> binaural (2, N) float32 [left, right]; `clock`: as for
    :func:`audio_positions`. The inputs are checked first (:func:`check_render_inputs`)."""
    mono, frames = check_render_inputs(mono, sample_rate, frames, fps)
    az = azimuth_deg(audio_positions(mono, sample_rate, frames, fps, anchoring, clock), frames.shape[2])
    return render_sphere(mono, az, sample_rate, dtype=np.float32)  # float32 as written, no float64 copy


def amplitude_pan(
    mono: np.ndarray, sample_rate: int, frames: np.ndarray, fps: float, anchoring: Anchoring | None = None
) -> np.ndarray:
    """Constant-power panning following the detected position: L = sqrt2 cos(phi), R = sqrt2 sin(phi),
    phi = (azimuth / FOV + 1/2) pi / 2; no interaural time difference. The inputs as for :func:`spatialise`."""
    from avflow.world.binaural import block_to_samples

    mono, frames = check_render_inputs(mono, sample_rate, frames, fps)
    az = azimuth_deg(audio_positions(mono, sample_rate, frames, fps, anchoring), frames.shape[2])
    phi = block_to_samples((az / FIELD_OF_VIEW + 0.5) * np.pi / 2, mono.size)
    return (np.sqrt(2.0) * np.stack([np.cos(phi), np.sin(phi)]) * mono).astype(np.float32)


PEAK_CEILING = 0.99  # a written binaural track's peak at most: under 0 dBFS, so no float WAV or AAC decodes over 1


def under_full_scale(audio: np.ndarray, ceiling: float = PEAK_CEILING) -> tuple[np.ndarray, float]:
    """`audio` scaled so that its peak is at most `ceiling`, and the gain applied (1.0: `audio` itself, unchanged).
    A binaural render can peak above its mono (the near ear's head-shadow boost): written as it is, it clips."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if not peak > ceiling:
        return audio, 1.0
    gain = ceiling / peak
    return audio * gain, gain


def gain_note(gain: float) -> str:
    """How a gain of :func:`under_full_scale` is said ("scaled by -5.4 dB to keep the peak under 0 dBFS"); '' for
    none."""
    if gain >= 1.0:
        return ""
    db = 20 * np.log10(gain)
    return f"scaled by {f'{db:.1f}' if db <= -0.05 else f'{db:.2g}'} dB to keep the peak under 0 dBFS"


def spatialise_video(mono: np.ndarray, sample_rate: int, video: str, width: int = 64) -> np.ndarray:
    """Mono (N,) generated for `video` -> binaural (2, N), positions detected in its frames (scaled to `width`)."""
    from avflow.data.media import video_frames

    frames, fps, _ = video_frames(video, width)
    return spatialise(mono, sample_rate, frames, fps)
