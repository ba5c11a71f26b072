"""Run the metric suite over a folder of clips (world format or plain mp4/wav) and format the results."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avflow.errors import MediaError
from avflow.eval import distribution, physics, spatial, sync

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
AUDIO_SUFFIXES = (".wav", ".flac")


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
    """Clip id (path relative to ``folder`` without suffix) -> the file or world stem that holds it.

    World clips (``.npz`` + ``.wav``) win over an ``.mp4`` preview of the same stem; an ``.mp4`` wins over a
    same-stem ``.wav`` (which then replaces the mp4's audio track when loading); a lone ``.wav`` is audio-only."""
    root = Path(folder)
    if not root.is_dir():
        raise MediaError(f"{root}: not a folder")
    groups: dict[str, dict[str, Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            cid = path.relative_to(root).with_suffix("").as_posix()
            groups.setdefault(cid, {})[path.suffix.lower()] = path
    found: dict[str, Path] = {}
    for cid, files in groups.items():
        videos = [files[s] for s in VIDEO_SUFFIXES if s in files]
        audios = [files[s] for s in AUDIO_SUFFIXES if s in files]
        if ".npz" in files and ".wav" in files:
            found[cid] = files[".npz"].with_suffix("")
        elif videos:
            found[cid] = videos[0]
        elif audios:
            found[cid] = audios[0]
    if not found:
        raise MediaError(f"{root}: no clips found (expected world clips .wav+.npz+.json, or .mp4 / .wav files)")
    return found


def _read_world(stem: Path, cid: str) -> EvalClip:
    from avflow.world.dataset import load_clip

    clip = load_clip(stem)
    meta = clip.meta
    return EvalClip(cid, clip.audio, int(meta["sample_rate"]), clip.frames, float(meta["fps"]), meta)


def load_eval_clip(path: Path, cid: str | None = None) -> EvalClip:
    """Read a world stem, a video file (its audio track, or a same-stem .wav beside it) or an audio file."""
    from avflow.data.media import read_audio, read_video

    cid = cid or path.stem
    if path.suffix == "":
        return _read_world(path, cid)
    meta_path = path.with_suffix(".json")
    meta = None
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise MediaError(f"{meta_path}: unreadable ground truth json: {exc}") from exc
    if path.suffix.lower() in AUDIO_SUFFIXES:
        audio, sr = read_audio(path)
        return EvalClip(cid, audio.numpy(), sr, None, 0.0, meta)
    video = read_video(path)
    wav = path.with_suffix(".wav")
    try:
        audio, sr = read_audio(wav if wav.is_file() else path)
    except MediaError as exc:
        raise MediaError(f"{path}: no audio to evaluate ({exc})") from exc
    return EvalClip(cid, audio.numpy(), sr, video.frames.numpy(), float(video.fps), meta)


def _gravity(meta: dict | None) -> float | None:
    """World gravity in px/s² (config gravity is in frame heights per s²)."""
    try:
        return float(meta["config"]["gravity"]) * float(meta["height"])
    except (TypeError, KeyError, ValueError):
        return None


def _events(meta: dict | None) -> tuple[np.ndarray, np.ndarray] | None:
    if not meta or not meta.get("events"):
        return None
    ev = meta["events"]
    times = np.array([float(e["time"]) for e in ev])
    az = np.array([float(e.get("azimuth", np.nan)) for e in ev])
    return times, az


def clip_metrics(clip: EvalClip, ref: EvalClip | None = None) -> dict[str, float]:
    """All metrics that apply to one clip: ground truth comes from the clip's own meta or else from ``ref``'s."""
    out: dict[str, float] = {}
    meta = clip.meta or (ref.meta if ref is not None else None)
    audio, sr = clip.audio, clip.sample_rate
    onsets = sync.detect_onsets(audio, sr)
    out["n_onsets"] = float(onsets.size)
    events = _events(meta)
    if events is not None:
        m = sync.match_offset(onsets, events[0])
        out |= {"sync_gt_ms": m["offset_ms"], "sync_gt_abs_ms": abs(m["offset_ms"]), "sync_gt_matched": m["matched"]}
    tracks = None
    if clip.frames is not None and len(clip.frames) > 2:
        fps = clip.fps
        tracks = physics.track_objects(clip.frames)
        m = sync.match_offset(onsets, sync.visual_contacts(tracks, fps))
        out |= {"sync_vis_ms": m["offset_ms"], "sync_vis_abs_ms": abs(m["offset_ms"]), "sync_vis_matched": m["matched"]}
        out["sync_xcorr_ms"] = sync.xcorr_offset(audio, sr, clip.frames, fps)["offset_ms"]
        out["av_align"] = sync.av_align(audio, sr, clip.frames, fps)
        gravity = _gravity(meta)
        fit = physics.trajectory_residual(tracks, fps, gravity)
        out |= {"phys_residual_px": fit["residual_px"], "phys_gravity_fit": fit["gravity_fit"]}
        out["phys_permanence"] = physics.object_permanence(tracks)
        g_energy = gravity if gravity is not None else fit["gravity_fit"]
        out["phys_energy_growth"] = physics.energy_growth(tracks, fps, g_energy) if np.isfinite(g_energy) else np.nan
    if audio.ndim == 2 and audio.shape[0] == 2:
        out["ild_db"] = spatial.ild(audio)
        out["itd_us"] = 1e6 * spatial.itd_gcc_phat(audio, sr)
        if events is not None and np.isfinite(events[1]).all():
            out["follows_object"] = spatial.follows_events(audio, sr, events[0], events[1])
        elif tracks is not None and tracks.centers.shape[1] == 1:
            out["follows_object"] = spatial.follows_object(
                audio, sr, tracks.centers[:, 0, 0], tracks.frame_size[1], clip.fps
            )
        if ref is not None and ref.audio.ndim == 2 and ref.audio.shape[0] == 2 and ref.sample_rate == sr:
            p, r = audio, ref.audio
            out |= {
                "delta_ild_db": spatial.delta_ild(p, r),
                "delta_itd_us": spatial.delta_itd(p, r, sr),
                "ipd_error_rad": spatial.ipd_error(p, r),
                "stft_dist": spatial.stft_distance(p, r),
                "env_dist": spatial.envelope_distance(p, r),
                "mag_dist": spatial.magnitude_distance(p, r),
                "phase_dist": spatial.phase_distance(p, r),
                "snr_db": spatial.snr(p, r),
            }
    return {k: float(v) for k, v in out.items()}


def _embed(clips: list[EvalClip], modality: str) -> np.ndarray | None:
    usable = [c for c in clips if modality == "audio" or c.frames is not None]
    if len(usable) < 2:
        return None
    emb = distribution.StatsEmbedder(modality)
    return np.stack([emb(c.audio, c.sample_rate, c.frames, c.fps) for c in usable])


def evaluate(pred_dir: str | Path, ref_dir: str | Path | None = None, progress=None) -> dict:
    """Metrics for every clip of ``pred_dir`` (paired by id with ``ref_dir`` when given), their means, and the
    Fréchet distances between the two sets (default embedder, per modality)."""
    start = time.perf_counter()
    pred_paths = find_clips(pred_dir)
    ref_paths = find_clips(ref_dir) if ref_dir is not None else {}
    per_clip: dict[str, dict[str, float]] = {}
    pred_clips, ref_clips = [], []
    for cid, path in pred_paths.items():
        clip = load_eval_clip(path, cid)
        ref = load_eval_clip(ref_paths[cid], cid) if cid in ref_paths else None
        per_clip[cid] = clip_metrics(clip, ref)
        pred_clips.append(clip)
        if progress:
            progress(cid, per_clip[cid])
    for cid, path in ref_paths.items():
        ref_clips.append(load_eval_clip(path, cid))
    keys = sorted({k for m in per_clip.values() for k in m})
    mean = {}
    for k in keys:
        vals = np.array([m.get(k, np.nan) for m in per_clip.values()])
        vals = vals[np.isfinite(vals)]
        mean[k] = float(vals.mean()) if vals.size else float("nan")
    dist: dict[str, float] = {}
    if ref_clips:
        for modality in ("av", "audio", "video"):
            a, b = _embed(pred_clips, modality), _embed(ref_clips, modality)
            if a is not None and b is not None:
                dist[f"fd_{modality}"] = distribution.frechet_distance(a, b)
    return {
        "pred_dir": str(pred_dir),
        "ref_dir": None if ref_dir is None else str(ref_dir),
        "n_clips": len(per_clip),
        "n_paired": sum(cid in ref_paths for cid in pred_paths),
        "mean": mean,
        "distribution": dist,
        "clips": per_clip,
        "seconds": time.perf_counter() - start,
    }


# metric -> what it is (and which direction is better)
DESCRIPTIONS: dict[str, str] = {
    "sync_gt_ms": "offset of audio onsets vs ground-truth events (ms, + = audio late)",
    "sync_gt_abs_ms": "|sync_gt_ms| per clip, averaged (ms, lower is better)",
    "sync_vis_ms": "offset of audio onsets vs contacts seen in the frames (ms)",
    "sync_vis_abs_ms": "|sync_vis_ms| per clip, averaged (ms, lower is better)",
    "sync_xcorr_ms": "offset maximising onset / motion-onset cross-correlation (ms)",
    "av_align": "AV-Align IoU of audio and motion peaks (higher is better)",
    "phys_residual_px": "gravity-and-bounce fit residual (px, lower is better)",
    "phys_permanence": "object permanence (1 = nothing vanishes)",
    "phys_energy_growth": "fraction of bounces that gain energy (lower is better)",
    "follows_object": "ILD follows the object's side (+1 best, -1 swapped)",
    "delta_ild_db": "|ILD - ILD_ref| (dB)",
    "delta_itd_us": "|ITD - ITD_ref| (us)",
    "snr_db": "SNR vs reference (dB, higher is better)",
}


def format_table(result: dict) -> str:
    """Means over clips, then Fréchet distances, as aligned text."""
    lines = [
        f"{result['n_clips']} clips from {result['pred_dir']}"
        + (f" ({result['n_paired']} paired with {result['ref_dir']})" if result["ref_dir"] else "")
    ]
    width = max([len(k) for k in result["mean"]] + [len(k) for k in result["distribution"]] + [6])
    lines.append(f"{'metric':<{width}}  {'mean':>10}  note")
    for k, v in result["mean"].items():
        lines.append(f"{k:<{width}}  {v:>10.4g}  {DESCRIPTIONS.get(k, '')}")
    for k, v in result["distribution"].items():
        lines.append(f"{k:<{width}}  {v:>10.4g}  Fréchet distance to the reference set ({k[3:]} statistics)")
    lines.append(f"({result['seconds']:.1f} s)")
    return "\n".join(lines)
