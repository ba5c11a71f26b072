"""Make, write and read world clips and datasets (file layout in CONVENTIONS.md, "World clips")."""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.io import wavfile

from avflow.errors import ConfigError, MediaError
from avflow.world.binaural import block_times, render_binaural
from avflow.world.caption import make_caption, object_side
from avflow.world.render import frame_times, render_frames
from avflow.world.scene import Scene, WorldConfig, sample_scene
from avflow.world.sound import ambience, object_sources

SPLITS = ("train", "val", "test")
SPLIT_SEED_BASE = {"train": 0, "val": 1 << 40, "test": 2 << 40}  # disjoint clip-seed ranges per split
SEEDS_PER_RUN = 1_000_000  # clip seed = split base + seed * SEEDS_PER_RUN + index


@dataclass
class WorldClip:
    audio: np.ndarray  # (2, N) float32 [left, right]
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, K, H, W) bool, visible pixels of each object
    meta: dict  # ground truth (the json)


def render_audio(scene: Scene, events: list[int] | None = None, rolling: bool | None = None,
                 with_ambience: bool | None = None) -> np.ndarray:  # fmt: skip
    """(2, N) float64 binaural mix before the output gain; `events` restricts the impacts rendered."""
    config = scene.config
    sources = object_sources(scene, events=events, rolling=rolling)  # (K, N)
    x = scene.trajectories.at(block_times(config.n_samples, config.sample_rate))[:, :, 0]  # (K, B)
    out = render_binaural(sources, x, config.width, config.sample_rate, config.hrtf)
    if with_ambience if with_ambience is not None else config.ambience > 0:
        out = out + ambience(scene)
    return out


def ground_truth(scene: Scene, clip_id: str, caption: str, audio_gain: float) -> dict:
    config = scene.config
    pos = scene.trajectories.at(frame_times(scene))  # (K, T, 2)
    objects = []
    for k, o in enumerate(scene.objects):
        objects.append({**asdict(o), "rgb": list(o.rgb), "side": object_side(scene, k)})
    events = []
    for e in scene.events:
        events.append({
            "time": e.time, "object": e.object, "other": e.other, "surface": e.surface,
            "position": list(e.position), "speed": e.speed, "material": scene.objects[e.object].material,
            "other_material": None if e.other is None else scene.objects[e.other].material,
            "azimuth": (e.position[0] / config.width - 0.5) * 90.0,
        })  # fmt: skip
    return {
        "id": clip_id,
        "seed": scene.seed,
        "duration": config.duration,
        "fps": config.fps,
        "sample_rate": config.sample_rate,
        "width": config.width,
        "height": config.height,
        "n_frames": config.n_frames,
        "n_samples": config.n_samples,
        "caption": caption,
        "materials": [o.material for o in scene.objects],
        "objects": objects,
        "events": events,
        "trajectories": np.round(pos, 3).tolist(),  # (K, T, 2) object centres in pixels at frame start times
        "audio_gain": audio_gain,
        "background": scene.background,
        "config": asdict(config),
    }


def make_clip(seed: int, config: WorldConfig | None = None, clip_id: str | None = None) -> WorldClip:
    """Simulate, render and sonify one clip; identical for identical (seed, config)."""
    config = config or WorldConfig()
    scene = sample_scene(config, np.random.default_rng(seed), seed=seed)
    frames, masks = render_frames(scene)
    audio = render_audio(scene) * config.gain
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    gain = config.gain * (0.99 / peak if peak > 0.99 else 1.0)
    if peak > 0.99:
        audio *= 0.99 / peak
    meta = ground_truth(scene, clip_id or f"clip_{seed}", make_caption(scene), gain)
    return WorldClip(audio.astype(np.float32), frames, masks, meta)


def rerender_audio(meta: dict, ambience_seed: int | None = None) -> np.ndarray:
    """(2, N) float32 audio of the clip that `meta` (its json) describes, with the ambience drawn for `ambience_seed`
    instead of the clip's seed (None: the clip's own audio again). The same sounds under another draw of the random
    background: the ground truth against it is the floor of an audio measure (what no codec can be asked to beat)."""
    config = WorldConfig(**{**meta["config"], "materials": tuple(meta["config"]["materials"])})
    scene = sample_scene(config, np.random.default_rng(meta["seed"]), seed=meta["seed"])
    audio = render_audio(scene, with_ambience=False)
    if config.ambience > 0:
        audio = audio + ambience(replace(scene, seed=meta["seed"] if ambience_seed is None else ambience_seed))
    return (audio * meta["audio_gain"]).astype(np.float32)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed with a fixed zip timestamp, so equal arrays give byte-identical files."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=1)


def write_clip(clip: WorldClip, stem: str | Path) -> None:
    """Writes {stem}.wav, {stem}.npz and {stem}.json."""
    stem = Path(stem)
    # scipy writes a plain IEEE-float wav; libsndfile would add a PEAK chunk with a timestamp (not reproducible)
    wavfile.write(stem.with_suffix(".wav"), clip.meta["sample_rate"], np.ascontiguousarray(clip.audio.T))
    _write_npz(stem.with_suffix(".npz"), {"frames": clip.frames, "masks": clip.masks})
    stem.with_suffix(".json").write_text(json.dumps(clip.meta, indent=1) + "\n")


def load_clip(stem: str | Path) -> WorldClip:
    """Reads a clip written by `write_clip` from its path without suffix."""
    stem = Path(stem)
    for suffix in (".wav", ".npz", ".json"):
        if not stem.with_suffix(suffix).is_file():
            raise MediaError(f"world clip file missing: {stem.with_suffix(suffix)}")
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
        audio, sr = sf.read(stem.with_suffix(".wav"), dtype="float32", always_2d=True)
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as data:
            frames, masks = data["frames"], data["masks"]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise MediaError(f"cannot read world clip {stem}: {exc}") from exc
    if audio.shape[1] != 2 or sr != meta.get("sample_rate"):
        raise MediaError(
            f"{stem}.wav: expected stereo at {meta.get('sample_rate')} Hz, got {audio.shape[1]} ch {sr} Hz"
        )
    if frames.ndim != 4 or masks.ndim != 4 or masks.shape[0] != frames.shape[0] or masks.dtype != bool:
        raise MediaError(f"{stem}.npz: bad shapes frames {frames.shape} masks {masks.shape} {masks.dtype}")
    return WorldClip(np.ascontiguousarray(audio.T), frames, masks, meta)


def split_sizes(n: int) -> dict[str, int]:
    """About 80/10/10; val and test get at least one clip once n >= 3."""
    n_eval = max(1, round(0.1 * n)) if n >= 3 else 0
    return {"train": n - 2 * n_eval, "val": n_eval, "test": n_eval}


def clip_seed(split: str, seed: int, index: int) -> int:
    return SPLIT_SEED_BASE[split] + seed * SEEDS_PER_RUN + index


def _written_meta(stem: Path, seed: int, config: WorldConfig) -> dict | None:
    """The meta of a clip already on disk from this seed and config (its json is written last), else None."""
    try:
        meta = json.loads(stem.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    complete = stem.with_suffix(".wav").is_file() and stem.with_suffix(".npz").is_file()
    same = meta.get("seed") == seed and meta.get("config") == json.loads(json.dumps(asdict(config)))
    return meta if complete and same else None


def _job(args: tuple) -> dict:
    split, index, seed, out, config, preview = args
    clip_id = f"{split}_{index:06d}"
    stem = Path(out) / split / clip_id
    m = _written_meta(stem, clip_seed(split, seed, index), config)
    if m is None:  # not made yet, or made from another seed or config: (re)render
        clip = make_clip(clip_seed(split, seed, index), config, clip_id)
        write_clip(clip, stem)
        if preview:
            write_preview(clip, stem)
        m = clip.meta
    return {"id": clip_id, "duration": m["duration"], "fps": m["fps"], "sample_rate": m["sample_rate"],
            "caption": m["caption"], "n_events": len(m["events"])}  # fmt: skip


def write_preview(clip: WorldClip, stem: Path) -> bool:
    """{stem}.mp4 for people, if `avflow.data.media.write_video` is available."""
    try:
        from avflow.data.media import write_video
    except ImportError:
        return False
    import torch

    write_video(stem.with_suffix(".mp4"), torch.from_numpy(clip.frames), clip.meta["fps"],
                audio=torch.from_numpy(clip.audio), sample_rate=clip.meta["sample_rate"])  # fmt: skip
    return True


def preview_available() -> bool:
    try:
        from avflow.data.media import write_video  # noqa: F401
    except ImportError:
        return False
    return True


def make_dataset(out: str | Path, n: int, seed: int = 0, workers: int = 1, preview: bool = False,
                 config: WorldConfig | None = None, progress=None) -> dict[str, int]:  # fmt: skip
    """Writes out/{train,val,test}/ clips and out/{split}/manifest.jsonl; returns the split sizes."""
    if n < 1 or n > SEEDS_PER_RUN:
        raise ConfigError(f"--n must be between 1 and {SEEDS_PER_RUN}, got {n}")
    if not 0 <= seed < (1 << 40) // SEEDS_PER_RUN:
        raise ConfigError(f"--seed must be between 0 and {(1 << 40) // SEEDS_PER_RUN - 1}, got {seed}")
    config = config or WorldConfig()
    out = Path(out)
    sizes = split_sizes(n)
    jobs = []
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
        jobs += [(split, i, seed, str(out), config, preview) for i in range(sizes[split])]
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            rows = []
            for row in pool.imap(_job, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                rows.append(row)
                if progress:
                    progress(row)
    else:
        rows = []
        for job in jobs:
            rows.append(_job(job))
            if progress:
                progress(rows[-1])
    for split in SPLITS:
        lines = [json.dumps(r) for r in rows if r["id"].startswith(split + "_")]
        (out / split / "manifest.jsonl").write_text("".join(line + "\n" for line in lines))
    return sizes


def with_overrides(config: WorldConfig, **overrides) -> WorldConfig:
    """A copy of `config` with some fields changed (validated again)."""
    return replace(config, **overrides)


def read_manifest(root: str | Path, split: str) -> list[dict]:
    """The rows of `root/split/manifest.jsonl` (one dict per clip)."""
    path = Path(root) / split / "manifest.jsonl"
    if not path.is_file():
        raise MediaError(f"{path}: no such manifest (make the dataset with `avflow world make`)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
