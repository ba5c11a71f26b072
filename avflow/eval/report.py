"""Run the metric suite over a folder of clips (world format or plain mp4/wav) and format the results.

Every measure is a :class:`avflow.eval.measure.Measure`: a clip reports the measures that are defined, and the reason
for each that is not; a folder reports per metric the clips where it is defined and its median (offsets: the median
|offset| and the fractions within ±20 and ±62 ms), never a mean that mixes signs; the Fréchet distances come with
the two set sizes, and are undefined with no more clips than the embedding's dimensions (docs/metrics.md)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avflow.data.file_kinds import AUDIO_FILE_SUFFIXES, VIDEO_FILE_SUFFIXES, hidden
from avflow.errors import MediaError
from avflow.eval import distribution, physics, side, spatial, sync
from avflow.eval.clip import ClipConfig, ClipMeasures, measure_clip
from avflow.eval.events import truth_events
from avflow.eval.measure import Measure
from avflow.eval.offset import match_events
from avflow.eval.onsets import audio_onsets

VIDEO_SUFFIXES = VIDEO_FILE_SUFFIXES
AUDIO_SUFFIXES = AUDIO_FILE_SUFFIXES  # audio-only clips
# Frames of a video without ground truth are read with their long side at most this (px, aspect kept): the measures
# find flashes, contacts and objects at this size (world clips are 64 px, the real-sound set 128), and a 4 s 4K clip
# read whole took 21 GB and 81 s. Measures in px are in the pixels of the frames as read.
EVAL_MAX_SIDE = 320
# A clip's frames are held whole while it is measured (at the working size; a clip with ground truth at its own size),
# so memory grows with its length: measured peak RSS 0.70 GB for 10 s and 1.12 GB for 60 s of 720p, 3.73 GB for 5 min
# of 360p, all read at 320x180 (5.2 MB/s of frames; ~11 MB/s in all with the decoder's and the audio measures' copies).
# A clip whose frames would take more than this many bytes is refused in one line before it is decoded (about 3.8 GB
# peak): 5 min 8 s of 16:9 video at 30 fps, half that at 60 fps.
EVAL_MAX_FRAME_BYTES = 1_600_000_000

SILENT_EAR = "an ear is silent (no interaural cue)"
# A decoded clip and its reference may differ in length by codec framing (an AAC frame is 1024 samples, 64 ms at
# 16 kHz); the paired measures compare the common part of two lengths this close, and no further apart.
PAIR_SLACK_S = 0.1
PAIRED = ("delta_ild_db", "delta_itd_us", "ipd_error_rad", "stft_dist", "env_dist", "mag_dist", "phase_dist", "snr_db")


@dataclass
class EvalClip:
    """One clip as the metrics see it; ``frames`` is None for audio-only clips, ``meta`` None without ground truth."""

    id: str
    audio: np.ndarray  # (C, N) float32
    sample_rate: int
    frames: np.ndarray | None  # (T, H, W, 3) uint8
    fps: float
    meta: dict | None = None


def find_clips(folder: str | Path) -> dict[str, Path]:
    """Clip id (path relative to ``folder`` without suffix) -> the file or world stem that holds it; a single video
    or audio file is one clip, its id its name without suffix.

    World clips (``.npz`` + ``.wav``) win over an ``.mp4`` preview of the same stem; a same-stem ``.wav`` beside a
    single video replaces its audio track when loading (`sound_file`); a lone ``.wav`` is audio-only. Files that
    share a stem otherwise (``a.mp4``, ``a.mov``, ``a.mkv``) are each a clip, their ids keeping the suffix
    (``a.mp4``): all but one vanished without a word before. Linked folders are followed (each real folder once,
    so a link to a folder above is no loop), and a broken link is a clip that is skipped with that reason. Hidden
    files and folders are passed over (`file_kinds.hidden`: macOS's ``._clip.mp4``)."""
    root = Path(folder)
    if root.is_file():
        if root.suffix.lower() not in VIDEO_SUFFIXES + AUDIO_SUFFIXES:
            raise MediaError(f"{root}: not a clip (a video: {', '.join(VIDEO_SUFFIXES)}; audio: "
                             f"{', '.join(AUDIO_SUFFIXES)}; world clips: their folder)")  # fmt: skip
        return {root.stem: root}
    if not root.is_dir():
        raise MediaError(f"{root}: not found")
    groups: dict[str, list[Path]] = {}
    for path in _walk(root):
        groups.setdefault(path.relative_to(root).with_suffix("").as_posix(), []).append(path)
    found: dict[str, Path] = {}
    for cid, files in groups.items():
        found |= _stem_clips(cid, files)
    if not found:
        raise MediaError(f"{root}: no clips found (expected world clips .wav+.npz+.json, or .mp4 / .wav files)")
    return found


def _walk(root: Path) -> list[Path]:
    """Every file and broken link under ``root`` but hidden ones, sorted; linked folders are followed, each real
    folder once (real folders before links at each level, so ids name the real place where they can)."""
    found, seen = [], set()
    for top, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=lambda d: (os.path.islink(Path(top, d)), d))
        found += [Path(top, f) for f in files if not hidden(Path(top, f), root)]
    return sorted(found)


def _stem_clips(cid: str, files: list[Path]) -> dict[str, Path]:
    """The clips among the files that share the id ``cid`` (see `find_clips`): one under ``cid``, or several under
    ``cid`` plus each one's suffix."""
    suffixes = {p.suffix.lower() for p in files}
    if ".npz" in suffixes and ".wav" in suffixes:
        return {cid: next(p for p in files if p.suffix.lower() == ".npz").with_suffix("")}
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    audios = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
    if any(sound_file(v) != v for v in videos):
        audios = [p for p in audios if p.suffix.lower() != ".wav"]  # a video's sound, not a clip of its own
    clips = videos + audios
    if len(clips) == 1:
        return {cid: clips[0]}
    return {f"{cid}{p.suffix}": p for p in clips}


def sound_file(video: Path) -> Path:
    """Where a video's sound is read: a same-stem ``.wav`` beside it when it is the only video of that stem (a
    clip whose sound was written beside it), else the video itself (its own audio track)."""
    wav = video.with_suffix(".wav")
    if not wav.is_file() or video.suffix.lower() not in VIDEO_SUFFIXES:
        return video
    others = [s for s in VIDEO_SUFFIXES if s != video.suffix.lower() and video.with_suffix(s).is_file()]
    return video if others else wav


def reference_id(cid: str, ref_ids) -> str | None:
    """The id in ``ref_ids`` that clip ``cid`` pairs with: the same id, or for an id that kept its suffix
    (`find_clips`: ``a.mp4`` beside ``a.mov``) the id without it; None when there is none."""
    if cid in ref_ids:
        return cid
    stem, suffix = cid.rsplit(".", 1) if "." in cid.rsplit("/", 1)[-1] else (cid, "")
    return stem if f".{suffix.lower()}" in VIDEO_SUFFIXES + AUDIO_SUFFIXES and stem in ref_ids else None


def _read_world(stem: Path, cid: str) -> EvalClip:
    from avflow.world.dataset import load_clip

    clip = load_clip(stem)  # its json's sample_rate and fps checked (positive numbers), else a MediaError
    meta = clip.meta
    check_ground_truth(meta, stem.with_suffix(".json"))
    return EvalClip(cid, clip.audio, int(meta["sample_rate"]), clip.frames, float(meta["fps"]), meta)


def load_eval_clip(path: Path, cid: str | None = None) -> EvalClip:
    """Read a world stem, a video file (its audio track, or a same-stem .wav beside it: `sound_file`) or an audio
    file; a video file without a video stream is read as audio-only (as the same sound in an .m4a is)."""
    from avflow.data.media import probe, read_audio, read_video

    cid = cid or path.stem
    if path.is_symlink() and not path.exists():
        raise MediaError(f"{path}: a broken link (to {os.readlink(path)})")
    if path.suffix == "":
        return _read_world(path, cid)
    meta = _ground_truth(path.with_suffix(".json"))
    info = probe(path) if path.suffix.lower() not in AUDIO_SUFFIXES else None
    if info is None or not info.has_video:
        audio, sr = read_audio(path)
        return EvalClip(cid, _mono_or_stereo(audio.numpy(), path), sr, None, 0.0, meta)
    sound = sound_file(path)
    if sound == path and not info.has_audio:
        raise MediaError(f"{path}: no audio stream (the measures need the sound)")
    size = None if meta is not None else _working_size(info)  # truth is in source px
    _check_length(path, info, size)
    video = read_video(path, size=size)
    audio, sr = read_audio(sound)
    return EvalClip(cid, _mono_or_stereo(audio.numpy(), path), sr, video.frames.numpy(), float(video.fps), meta)


# What the measures read of a clip's json (`clip_measures`): its events, its true offset, the world's config
# (gravity). A same-name json holding none of them (a user's own notes, a download's metadata) is not ground truth: it
# is ignored, and the video is read at the working size (such a json switched a 10 s 1080p clip to full-resolution
# frames: 4.05 GB and 60 s instead of 1.29 GB and 24 s).
GROUND_TRUTH_KEYS = ("events", "offset_ms", "config")


def _ground_truth(meta_path: Path) -> dict | None:
    """The clip's ground truth from ``meta_path``: a json object with any of GROUND_TRUTH_KEYS (world clips, the
    real-sound set), else None (no file, or a json of something else); an unreadable one, or one whose values are
    not what the measures read (`check_ground_truth`), is a MediaError: the clip is skipped with it."""
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise MediaError(f"{meta_path}: unreadable ground truth json: {exc}") from exc
    if not (isinstance(meta, dict) and any(k in meta for k in GROUND_TRUTH_KEYS)):
        return None
    check_ground_truth(meta, meta_path)
    return meta


def _finite(value) -> bool:
    """Whether a json value is a finite real number (true and false are not: ``true`` was read as 1 ms)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_ground_truth(meta: dict, meta_path: Path) -> None:
    """A one-line MediaError naming ``meta_path`` unless its ``offset_ms`` (where given) is a finite number and its
    ``events`` (where given) a list of objects, each with a finite ``time`` (s) and a finite or null ``azimuth``:
    a string, null, NaN or 1e999 there ended the whole run after every clip was measured."""
    if "offset_ms" in meta and not _finite(meta["offset_ms"]):
        raise MediaError(f"{meta_path}: offset_ms must be a finite number of ms, got {json.dumps(meta['offset_ms'])}")
    events = meta.get("events")
    if events is None:
        return
    if not isinstance(events, list):
        raise MediaError(f'{meta_path}: events must be a list of {{"time": seconds, ...}}, got {json.dumps(events)}')
    for k, event in enumerate(events):
        if not isinstance(event, dict):
            raise MediaError(f'{meta_path}: events[{k}] must be an object {{"time": seconds, ...}}, got '
                             f"{json.dumps(event)}")  # fmt: skip
        if not _finite(event.get("time")):
            raise MediaError(f"{meta_path}: events[{k}].time must be a finite number of seconds, got "
                             f"{json.dumps(event.get('time'))}")  # fmt: skip
        if event.get("azimuth") is not None and not _finite(event["azimuth"]):
            raise MediaError(f"{meta_path}: events[{k}].azimuth must be a finite number of degrees or null, got "
                             f"{json.dumps(event['azimuth'])}")  # fmt: skip


def _mono_or_stereo(audio: np.ndarray, path: Path) -> np.ndarray:
    """``audio`` (C, N) when C is 1 or 2 (what the measures take); a MediaError (the clip is skipped with it)
    otherwise."""
    if audio.shape[0] > 2:
        raise MediaError(f"{path}: {audio.shape[0]} audio channels; the measures take mono or stereo (mix it down)")
    return audio


def _check_length(path: Path, info, size: tuple[int, int] | None) -> None:
    """A one-line MediaError, before decoding, for a video whose frames at ``size`` (None: its own) would take more
    than EVAL_MAX_FRAME_BYTES; it says the longest clip of this size and rate that is measured."""
    h, w = size if size is not None else (info.height, info.width)
    fps = float(info.fps) if info.fps and info.fps > 0 else 30.0
    n_frames = max(int(info.n_frames or 0), int(np.ceil(float(info.duration or 0.0) * fps)))
    per_frame = 3 * max(1, h) * max(1, w)
    if n_frames * per_frame > EVAL_MAX_FRAME_BYTES:
        longest = EVAL_MAX_FRAME_BYTES / per_frame / fps
        raise MediaError(f"{path}: {info.duration:.0f} s long; avflow eval holds a clip's frames in memory ({w}x{h} "
                         f"at {fps:g} fps: {per_frame * fps / 1e6:.1f} MB/s) and measures clips up to "
                         f"{longest:.0f} s of it ({EVAL_MAX_FRAME_BYTES / 1e9:g} GB of frames): cut it into parts "
                         "(e.g. ffmpeg -ss START -t SECONDS)")  # fmt: skip


def _working_size(info) -> tuple[int, int] | None:
    """(H, W) with the long side EVAL_MAX_SIDE for a larger video (`probe`'s ``info``), else None (read as it is)."""
    scale = EVAL_MAX_SIDE / max(info.height, info.width, 1)
    return None if scale >= 1 else (max(1, round(info.height * scale)), max(1, round(info.width * scale)))


def _gravity(meta: dict | None) -> float | None:
    """World gravity in px/s² (config gravity is in frame heights per s²)."""
    try:
        gravity = float(meta["config"]["gravity"]) * float(meta["height"])
    except (TypeError, KeyError, ValueError, OverflowError):
        return None
    return gravity if math.isfinite(gravity) else None


def _truth(meta: dict | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Ground-truth event times (s) and azimuths (degrees, NaN where none) from a clip's json."""
    if not meta or not meta.get("events"):
        return None
    try:
        times = np.array([float(e["time"]) for e in meta["events"]])
        az = np.array([float(e["azimuth"]) if e.get("azimuth") is not None else np.nan for e in meta["events"]])
    except (TypeError, KeyError, ValueError) as exc:
        raise MediaError(f"ground truth json: bad event ({exc})") from exc
    return times, az


def _wrap(value: float, reason: str, confidence: float = 1.0) -> Measure:
    return Measure.of(value, confidence) if np.isfinite(value) else Measure.undefined(reason)


def _abs(m: Measure) -> Measure:
    return Measure.of(abs(m.value), m.confidence) if m.defined else m


@dataclass
class ClipResult:
    """All measures of one clip (name -> :class:`Measure`) and, for timelines, the sync and side details."""

    measures: dict[str, Measure]
    details: ClipMeasures


def clip_measures(clip: EvalClip, ref: EvalClip | None = None, config: ClipConfig | None = None) -> ClipResult:
    """Every measure that applies to one clip; ground truth comes from the clip's own meta or else from ``ref``'s."""
    meta = clip.meta or (ref.meta if ref is not None else None)
    audio, sr = clip.audio, clip.sample_rate
    binaural = audio.ndim == 2 and audio.shape[0] == 2
    details = measure_clip(audio, sr, clip.frames, clip.fps, config=config)
    out: dict[str, Measure] = {}
    onsets = details.onsets if details.onsets is not None else audio_onsets(audio, sr)
    out["n_onsets"] = Measure.of(float(len(onsets)))
    out["sync_offset_ms"] = details.sync_offset_ms
    out["sync_offset_abs_ms"] = _abs(details.sync_offset_ms)
    if meta and "offset_ms" in meta and details.sync_offset_ms.defined:
        m = details.sync_offset_ms
        out["sync_error_ms"] = Measure.of(m.value - float(meta["offset_ms"]), m.confidence)
    truth = _truth(meta)
    if truth is not None:
        gt_events = truth_events(*truth)
        gt = match_events(onsets, gt_events)
        out["sync_gt_ms"], out["sync_gt_abs_ms"] = gt.offset_ms, _abs(gt.offset_ms)
        if binaural:
            out["side_gt_agreement"] = side.side_agreement(side.event_sides(audio, sr, onsets, gt_events, gt))
    out["side_agreement"] = details.side_agreement
    out["follows_object"] = details.follows_object
    if clip.frames is not None and details.events is None:
        why = details.sync_offset_ms.reason or "no visual events"
        for k in ("av_align", "phys_residual_px", "phys_gravity_fit", "phys_permanence", "phys_energy_growth"):
            out[k] = Measure.undefined(why)
    if details.events is not None and clip.frames is not None:
        out["av_align"] = _wrap(sync.av_align(audio, sr, clip.frames, clip.fps), "no audio onset and no motion peak")
        tracks = details.tracks if details.tracks is not None else physics.track_objects(clip.frames)
        gravity = _gravity(meta)
        fit = physics.trajectory_residual(tracks, clip.fps, gravity)
        out["phys_residual_px"] = _wrap(fit["residual_px"], "no object tracked for 4 or more frames")
        out["phys_gravity_fit"] = _wrap(fit["gravity_fit"], "no free-flight segment to fit")
        out["phys_permanence"] = _wrap(physics.object_permanence(tracks), "no object tracked")
        g = gravity if gravity is not None else fit["gravity_fit"]
        growth = physics.energy_growth(tracks, clip.fps, g) if np.isfinite(g) else np.nan
        out["phys_energy_growth"] = _wrap(growth, NO_ENERGY_PAIRS)
    if binaural:
        out["ild_db"] = _wrap(spatial.ild(audio), SILENT_EAR)
        out["itd_us"] = _wrap(1e6 * spatial.itd_gcc_phat(audio, sr), SILENT_EAR)
    if ref is not None:
        out |= _paired_spatial(audio, sr, ref.audio, ref.sample_rate)
    return ClipResult(out, details)


NO_ENERGY_PAIRS = ("no two bounce intervals to compare (no bounce seen, or each pair around a contact between "
                   "objects), or no gravity to weigh energy")  # fmt: skip


def _paired_spatial(p: np.ndarray, sr: int, r: np.ndarray, ref_sr: int) -> dict[str, Measure]:
    """The binaural measures of pred ``p`` (at ``sr``) against ref ``r`` (at ``ref_sr``), both (C, N): every one
    undefined with the reason when either is mono; a prediction at another rate is resampled to the reference's
    (`avflow.data.audio.resample`; they vanished without a word before). The metrics refuse two lengths, so the cut
    to the shorter is made here, explicitly, and only within ``PAIR_SLACK_S``; further apart every paired measure is
    undefined and says both lengths."""
    mono = [name for name, a in (("the clip", p), ("its reference", r)) if a.shape[0] != 2]
    if mono:
        why = f"{' and '.join(mono)} {'is' if len(mono) == 1 else 'are'} mono (the paired measures compare two ears)"
        return {k: Measure.undefined(why) for k in PAIRED}
    if sr != ref_sr:
        from avflow.data.audio import resample

        p, sr = resample(np.asarray(p, np.float32), int(sr), int(ref_sr)), int(ref_sr)
    if abs(p.shape[1] - r.shape[1]) > PAIR_SLACK_S * sr:
        why = f"the clip and its reference differ in length ({p.shape[1] / sr:.3f} s vs {r.shape[1] / sr:.3f} s)"
        return {k: Measure.undefined(why) for k in PAIRED}
    n = min(p.shape[1], r.shape[1])
    p, r = p[:, :n], r[:, :n]  # explicit cut of codec framing (see PAIR_SLACK_S)
    return {
        "delta_ild_db": _wrap(spatial.delta_ild(p, r), SILENT_EAR),
        "delta_itd_us": _wrap(spatial.delta_itd(p, r, sr), SILENT_EAR),
        "ipd_error_rad": _wrap(spatial.ipd_error(p, r), SILENT_EAR),
        "stft_dist": Measure.of(spatial.stft_distance(p, r)),
        "env_dist": Measure.of(spatial.envelope_distance(p, r)),
        "mag_dist": Measure.of(spatial.magnitude_distance(p, r)),
        "phase_dist": Measure.of(spatial.phase_distance(p, r)),
        "snr_db": _wrap(spatial.snr(p, r), "the reference is silent"),
    }


def clip_metrics(clip: EvalClip, ref: EvalClip | None = None) -> dict[str, float]:
    """The defined measures of :func:`clip_measures` as plain floats (undefined ones are left out)."""
    return {k: float(m.value) for k, m in clip_measures(clip, ref).measures.items() if m.defined}


MODALITIES = ("av", "audio", "video")  # the Fréchet distances between a folder and its references


def _embeddings(clip: EvalClip) -> dict[str, np.ndarray]:
    """The clip's statistics embedding per modality it has (the video ones need frames): all the Fréchet distances
    need of it, so a folder's clips are not held in memory."""
    return {
        m: distribution.StatsEmbedder(m)(clip.audio, clip.sample_rate, clip.frames, clip.fps)
        for m in MODALITIES
        if m == "audio" or clip.frames is not None
    }


FD_DIM = distribution.StatsEmbedder().dim  # the embedding's dimensions: each set needs more clips than this


def _frechet(pred: list[dict[str, np.ndarray]], ref: list[dict[str, np.ndarray]]) -> dict[str, Measure | dict]:
    """Per modality ``fd_<m>``: a :class:`Measure` (undefined with the reason when either set has no more clips
    with that modality than ``FD_DIM``: `distribution.frechet_defined`) and under ``n_<m>`` the two set sizes."""
    out: dict[str, Measure | dict] = {}
    for m in MODALITIES:
        a, b = [e[m] for e in pred if m in e], [e[m] for e in ref if m in e]
        if not a and not b:
            continue  # neither set has this modality (audio-only clips: no fd_video, no fd_av)
        sizes = {"n_pred": len(a), "n_ref": len(b)}
        why = distribution.frechet_defined(len(a), len(b), FD_DIM)
        if not a or not b:
            why = f"no {'prediction' if not a else 'reference'} has {'frames' if m != 'audio' else 'audio'}"
        fd = Measure.of(distribution.frechet_distance(np.stack(a), np.stack(b))) if not why else Measure.undefined(why)
        out[f"fd_{m}"], out[f"n_{m}"] = fd, sizes
    return out


SIGNED_MS = ("sync_offset_ms", "sync_gt_ms", "sync_error_ms")  # offsets: summarised by |x| and the ±20/±62 ms rates


def summarize(per_clip: dict[str, dict[str, Measure]]) -> dict[str, dict[str, float]]:
    """Per metric over the clips where it is defined: ``n_defined``, ``mean``, ``median``; for offsets (SIGNED_MS)
    no ``mean`` (+120 and −120 ms would average to 0) but ``mean_abs``, ``median_abs``, ``within_20ms``,
    ``within_62ms`` (fractions of the defined clips) and ``confident`` (fraction with confidence ≥ 0.5)."""
    keys = sorted({k for m in per_clip.values() for k in m})
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        ms = [m[k] for m in per_clip.values() if k in m and m[k].defined]
        row: dict[str, float] = {"n_defined": float(len(ms))}
        if ms:
            v = np.array([m.value for m in ms])
            row |= {"mean": float(v.mean()), "median": float(np.median(v))}
            if k in SIGNED_MS:
                a = np.abs(v)
                del row["mean"]
                row |= {
                    "mean_abs": float(a.mean()),
                    "median_abs": float(np.median(a)),
                    "within_20ms": float(np.mean(a <= 20.0)),
                    "within_62ms": float(np.mean(a <= 62.0)),
                    "confident": float(np.mean([m.confidence >= 0.5 for m in ms])),
                }
        out[k] = row
    return out


@dataclass
class _References:
    """The reference clips as a folder is measured: each one's embeddings, computed once, and why any could not
    be read (listed, never dropped without a word)."""

    paths: dict[str, Path]
    embeddings: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def load(self, rid: str) -> EvalClip | None:
        """Reference ``rid``, or None when it cannot be read (the reason kept under ``skipped``; not read again)."""
        if rid in self.skipped:
            return None
        try:
            return load_eval_clip(self.paths[rid], rid)
        except MediaError as exc:
            self.skipped[rid] = str(exc)
            return None

    def embed(self, rid: str, ref: EvalClip | None = None) -> None:
        """Keep reference ``rid``'s embeddings (``ref`` when already read)."""
        if rid not in self.embeddings:
            ref = ref if ref is not None else self.load(rid)
            if ref is not None:
                self.embeddings[rid] = _embeddings(ref)


def evaluate(
    pred_dir: str | Path, ref_dir: str | Path | None = None, progress=None, keep_details: bool = False
) -> dict:
    """Measures of every readable clip of ``pred_dir`` (paired with ``ref_dir``'s by id: `reference_id`), a summary
    per metric (:func:`summarize`) and the Fréchet distances between the two sets. A clip that cannot be read is
    skipped and listed with its reason (``skipped``); so is a reference (``ref_skipped``), and its prediction is
    measured without it, each paired measure undefined with that reason. ``sources`` names each clip's file,
    ``references`` each paired clip's reference and ``unpaired`` why a clip has none. A folder with no readable
    clip is a :class:`MediaError`. With ``keep_details`` the :class:`ClipMeasures` of each clip are returned under
    ``"details"`` (for timelines)."""
    start = time.perf_counter()
    pred_paths = find_clips(pred_dir)
    ref_paths = find_clips(ref_dir) if ref_dir is not None else {}
    if Path(pred_dir).is_file() and ref_dir is not None and Path(ref_dir).is_file():  # two files: each other's pair
        ref_paths = {cid: path for cid, path in zip(pred_paths, ref_paths.values(), strict=True)}
    refs = _References(ref_paths)
    per_clip: dict[str, dict[str, Measure]] = {}
    details: dict[str, ClipMeasures] = {}
    skipped: dict[str, str] = {}
    references: dict[str, str] = {}
    unpaired: dict[str, str] = {}
    pred_embeddings = []  # a clip's frames are dropped once it is measured and embedded
    for cid, path in pred_paths.items():
        try:
            clip = load_eval_clip(path, cid)
        except MediaError as exc:
            skipped[cid] = str(exc)
            continue
        rid = reference_id(cid, ref_paths) if ref_dir is not None else None
        ref = refs.load(rid) if rid is not None else None
        try:
            result = clip_measures(clip, ref)
        except MediaError as exc:
            skipped[cid] = str(exc)
            continue
        if ref is not None:
            references[cid] = str(ref_paths[rid])
        elif rid is not None:
            unpaired[cid] = f"its reference is unreadable: {refs.skipped[rid]}"
            result.measures.update({k: Measure.undefined(unpaired[cid]) for k in PAIRED})
        elif ref_dir is not None:
            unpaired[cid] = f"no clip {cid} in {ref_dir}"
        per_clip[cid] = result.measures
        if keep_details:
            details[cid] = result.details
        if ref_paths:
            pred_embeddings.append(_embeddings(clip))
            if ref is not None:
                refs.embed(rid, ref)
        if progress:
            progress(cid, result.measures)
    if not per_clip:
        first = next(iter(skipped.items()))
        raise MediaError(f"{pred_dir}: no readable clip ({len(skipped)} skipped; {first[0]}: {first[1]})")
    for rid in ref_paths:
        refs.embed(rid)
    summary = summarize(per_clip)
    ref_embeddings = [refs.embeddings[rid] for rid in ref_paths if rid in refs.embeddings]  # the folder's order
    fd = _frechet(pred_embeddings, ref_embeddings) if ref_embeddings else {}
    out = {
        "pred_dir": str(pred_dir),
        "ref_dir": None if ref_dir is None else str(ref_dir),
        "n_clips": len(per_clip),
        "n_paired": len(references),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "n_ref_skipped": len(refs.skipped),
        "ref_skipped": refs.skipped,
        "sources": {cid: str(path) for cid, path in pred_paths.items()},
        "references": references,
        "unpaired": unpaired,
        "summary": summary,
        "mean": {k: row["mean"] for k, row in summary.items() if "mean" in row},  # never a signed offset's
        "distribution": {k: m.value for k, m in fd.items() if isinstance(m, Measure) and m.defined},
        "distribution_n": {f"fd_{k[2:]}": n for k, n in fd.items() if not isinstance(n, Measure)},
        "distribution_undefined": {k: m.reason for k, m in fd.items() if isinstance(m, Measure) and not m.defined},
        "clips": {cid: {k: m.value for k, m in ms.items() if m.defined} for cid, ms in per_clip.items()},
        "confidence": {cid: {k: round(m.confidence, 4) for k, m in ms.items() if m.defined and m.confidence < 1}
                       for cid, ms in per_clip.items()},
        "undefined": {cid: {k: m.reason for k, m in ms.items() if not m.defined} for cid, ms in per_clip.items()},
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    if keep_details:
        out["details"] = details
    return out


# metric -> what it is (and which direction is better)
DESCRIPTIONS: dict[str, str] = {
    "n_onsets": "audio onsets detected",
    "sync_offset_ms": "audio onsets vs visual events seen in the frames (ms, + = audio late)",
    "sync_offset_abs_ms": "|sync_offset_ms| (ms, lower is better)",
    "sync_error_ms": "sync_offset_ms minus the clip's true offset (ms)",
    "sync_gt_ms": "audio onsets vs ground-truth event times (ms, + = audio late)",
    "sync_gt_abs_ms": "|sync_gt_ms| (ms, lower is better)",
    "side_agreement": "matched events whose sound is on the visual side (1 best)",
    "side_gt_agreement": "ground-truth events whose sound is on their side (1 best)",
    "av_align": "AV-Align IoU of audio and motion peaks (higher is better)",
    "phys_residual_px": "gravity-and-bounce fit residual (px, lower is better; ground truth 0.38)",
    "phys_gravity_fit": "gravity fitted to the flights (px/s^2; world: 320, ground truth fits 318)",
    "phys_permanence": "object permanence (1 = nothing vanishes)",
    "phys_energy_growth": "fraction of bounce intervals that gain >10 % energy, contacts of objects left out (0 best)",
    "follows_object": "ILD at each sound's onset follows its object's side (+1 best, -1 swapped)",
    "ild_db": "interaural level difference, 20 log10(rms_L/rms_R) (dB, + = left louder)",
    "itd_us": "interaural time difference by GCC-PHAT (us, + = left leads)",
    "delta_ild_db": "|ILD - ILD_ref| (dB)",
    "delta_itd_us": "|ITD - ITD_ref| (us)",
    "ipd_error_rad": "energy-weighted |IPD - IPD_ref| over STFT bins (rad, lower is better)",
    "stft_dist": "Mono2Binaural STFT distance: sum over ears of mean squared Re/Im difference (lower is better)",
    "env_dist": "Mono2Binaural envelope distance: sum over ears of RMS Hilbert-envelope difference (lower is better)",
    "mag_dist": "PseudoBinaural magnitude distance: sum over ears of mean squared |STFT| difference (lower is better)",
    "phase_dist": "PseudoBinaural phase distance: mean |angle difference| of the L-R STFT (rad, lower is better)",
    "snr_db": "SNR vs reference (dB, higher is better)",
}


FD_NOTE = ("fd_*: hand-made statistics, not FAD/FVD/FID; biased upward by about 300/N on world clips, so only "
           "values from sets of the same sizes compare: docs/metrics.md")  # fmt: skip


def headline(result: dict) -> str:
    """One line: the clips measured, from where, how many paired with which reference folder, and the skips."""
    n, skipped, ref_skipped = result["n_clips"], result.get("n_skipped", 0), result.get("n_ref_skipped", 0)
    return (
        f"{n} clip{'s' if n != 1 else ''} from {result['pred_dir']}"
        + (f" ({result['n_paired']} paired with {result['ref_dir']})" if result["ref_dir"] else "")
        + (f"; {skipped} not measured (skipped)" if skipped else "")
        + (f"; {ref_skipped} reference clip{'s' if ref_skipped != 1 else ''} unreadable" if ref_skipped else "")
    )


def frechet_rows(result: dict) -> list[tuple[str, float | None, str]]:
    """Per Fréchet distance: its name, its value (None when undefined) and a note (the two set sizes, or why it is
    undefined)."""
    rows = []
    for k, n in result.get("distribution_n", {}).items():
        sets = f"{n['n_pred']} vs {n['n_ref']} clips"
        if k in result["distribution"]:
            rate = "" if k == "fd_video" else ", audio at 16 kHz"
            rows.append((k, result["distribution"][k], f"Fréchet distance to the reference set ({k[3:]} statistics"
                                                       f"{rate}), {sets}"))  # fmt: skip
        else:
            rows.append((k, None, result.get("distribution_undefined", {}).get(k, "")))
    return rows


def format_table(result: dict) -> str:
    """The summary as aligned text: per metric the clips where it is defined, its median (offsets: median |x| and
    the fractions within ±20 and ±62 ms), then the Fréchet distances."""
    lines = [headline(result)]
    summary, fds = result["summary"], frechet_rows(result)
    width = max([len(k) for k in summary] + [len(k) for k, _, _ in fds] + [6])
    lines.append(f"{'metric':<{width}}  {'defined':>7}  {'median':>9}  note")
    for k, row in summary.items():
        n = f"{int(row['n_defined'])}/{result['n_clips']}"
        if "median" not in row:
            lines.append(f"{k:<{width}}  {n:>7}  {'-':>9}  {DESCRIPTIONS.get(k, '')}")
            continue
        note = DESCRIPTIONS.get(k, "")
        if "median_abs" in row:
            note = (f"|x| median {row['median_abs']:.1f} ms, within ±20 ms {row['within_20ms']:.0%}, "
                    f"±62 ms {row['within_62ms']:.0%}, confident {row['confident']:.0%}; {note}")  # fmt: skip
        lines.append(f"{k:<{width}}  {n:>7}  {row['median']:>9.4g}  {note}")
    for k, value, note in fds:
        lines.append(f"{k:<{width}}  {'':>7}  {'-' if value is None else format(value, '.4g'):>9}  {note}")
    if fds:
        lines.append(f"({FD_NOTE})")
    lines.append(f"({result['seconds']:.1f} s)")
    return "\n".join(lines)
