"""Make, write and read world clips and datasets (file layout in docs/conventions.md, "World clips")."""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import re
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.io import wavfile

from avflow.errors import ConfigError, MediaError, OutputError
from avflow.weights import atomic_write
from avflow.world.binaural import block_times, render_binaural
from avflow.world.caption import make_caption, object_side
from avflow.world.render import frame_times, render_frames
from avflow.world.scene import Scene, WorldConfig, sample_scene
from avflow.world.sound import ambience, object_sources

SPLITS = ("train", "val", "test")
SPLIT_SEED_BASE = {"train": 0, "val": 1 << 40, "test": 2 << 40}  # disjoint clip-seed ranges per split
SEEDS_PER_RUN = 1_000_000  # clip seed = split base + seed * SEEDS_PER_RUN + index
SETTINGS_FILE = "dataset.json"  # at a dataset's root: the seed and world config all its clips are made with
CLIP_FILE = re.compile(r"(train|val|test)_(\d{6,})\.(wav|npz|json|mp4)")  # the files of one clip, by split and index
OPTIONS = {"seed": "--seed", "fps": "--fps", "duration": "--duration", "sample_rate": "--sample-rate", "hrtf": "--hrtf"}


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
    # the sounding objects' centres at each event (CONVENTIONS: azimuth from x_center; the contact point of a wall hit
    # is always at ±45°, the object rendered at its centre)
    centres = scene.trajectories.at(np.array([e.time for e in scene.events]))[:, :, 0] if scene.events else None
    azimuth = lambda k, i: float((centres[k, i] / config.width - 0.5) * 90.0)  # noqa: E731
    for i, e in enumerate(scene.events):
        events.append({
            "time": e.time, "object": e.object, "other": e.other, "surface": e.surface,
            "position": list(e.position), "speed": e.speed, "material": scene.objects[e.object].material,
            "other_material": None if e.other is None else scene.objects[e.other].material,
            "azimuth": azimuth(e.object, i),
            "other_azimuth": None if e.other is None else azimuth(e.other, i),  # both objects of a collision sound
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


def _write_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed with a fixed zip timestamp, so equal arrays give byte-identical files (`path`: a path or
    a seekable binary file)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=1)


class ClipWriteError(OutputError):
    """A clip file that could not be written (a full disk): the file and the reason, said by `make_dataset` with
    what is kept."""


def _write_file(path: Path, write) -> None:
    """`write(f)` into `path` atomically (a failure leaves no partial file; no fsync: a clip a power cut leaves
    short is remade by a rerun, and thousands of fsyncs cost a dataset's generation time); an OSError becomes a
    ClipWriteError naming the file."""
    try:
        atomic_write(path, write, durable=False)
    except OSError as exc:
        raise ClipWriteError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_clip(clip: WorldClip, stem: str | Path, preview: bool = False) -> None:
    """Writes {stem}.wav, {stem}.npz, with `preview` {stem}.mp4, and last {stem}.json: a json means the clip is
    whole. Each file atomically."""
    stem = Path(stem)
    # scipy writes a plain IEEE-float wav; libsndfile would add a PEAK chunk with a timestamp (not reproducible)
    audio = np.ascontiguousarray(clip.audio.T)
    _write_file(stem.with_suffix(".wav"), lambda f: wavfile.write(f, clip.meta["sample_rate"], audio))
    _write_file(stem.with_suffix(".npz"), lambda f: _write_npz(f, {"frames": clip.frames, "masks": clip.masks}))
    if preview:
        write_preview(clip, stem)
    text = (json.dumps(clip.meta, indent=1) + "\n").encode()
    _write_file(stem.with_suffix(".json"), lambda f: f.write(text))


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
    if not isinstance(meta, dict):  # a json of something else: the readers index it as a world clip's meta
        raise MediaError(f"{stem}.json: expected a world clip's meta (a json object, as `avflow world make` writes), "
                         f"got a json {type(meta).__name__}")  # fmt: skip
    for key in ("sample_rate", "fps"):  # what every reader of a clip needs (its audio and frame rates)
        if key not in meta:
            raise MediaError(f"{stem}.json: no {key} (not a world clip's meta as `avflow world make` writes it)")
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise MediaError(f"{stem}.json: {key} must be a number > 0, got {json.dumps(value)[:60]}")
    if audio.shape[1] != 2 or sr != meta["sample_rate"]:
        raise MediaError(f"{stem}.wav: expected stereo at {meta['sample_rate']} Hz, got {audio.shape[1]} ch {sr} Hz")
    if frames.ndim != 4 or masks.ndim != 4 or masks.shape[0] != frames.shape[0] or masks.dtype != bool:
        raise MediaError(f"{stem}.npz: bad shapes frames {frames.shape} masks {masks.shape} {masks.dtype}")
    return WorldClip(np.ascontiguousarray(audio.T), frames, masks, meta)


def split_sizes(n: int) -> dict[str, int]:
    """About 80/10/10: from n = 3 on val and test get max(1, round(0.1 n)) each and train the rest; below 3 every
    clip is train (`avflow world make --out` says so; fixed: existing datasets are extended by these sizes)."""
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
    if not isinstance(meta, dict):  # a json of something else: not this clip's, so it is made again
        return None
    complete = stem.with_suffix(".wav").is_file() and stem.with_suffix(".npz").is_file()
    same = meta.get("seed") == seed and meta.get("config") == json.loads(json.dumps(asdict(config)))
    return meta if complete and same else None


def _job(args: tuple) -> tuple[dict, bool]:
    """One clip written (or kept when already there from the same seed and config): its manifest row, and whether
    it was made now."""
    split, index, seed, out, config, preview = args
    clip_id = f"{split}_{index:06d}"
    stem = Path(out) / split / clip_id
    m = _written_meta(stem, clip_seed(split, seed, index), config)
    made = m is None
    if made:  # not made yet, or made from another seed or config: (re)render
        clip = make_clip(clip_seed(split, seed, index), config, clip_id)
        write_clip(clip, stem, preview=preview)
        m = clip.meta
    elif preview and not stem.with_suffix(".mp4").is_file():  # kept from a run without --preview, or cut short
        write_preview(load_clip(stem), stem)
    row = {"id": clip_id, "duration": m["duration"], "fps": m["fps"], "sample_rate": m["sample_rate"],
           "caption": m["caption"], "n_events": len(m["events"])}  # fmt: skip
    return row, made


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


def clip_memory(config: WorldConfig) -> int:
    """Bytes one clip holds at its peak while it is made and written (an upper bound, measured in the tests): per
    pixel the frames (3) and the masks of up to `max_objects` (K), both again while the npz is written, plus the
    renderer's scratch; per audio sample the K mono sources and the binaural mix in float64."""
    pixels = config.n_frames * config.height * config.width
    return pixels * (3 * config.max_objects + 9) + config.n_samples * 8 * (config.max_objects + 20)


def available_memory() -> int | None:
    """Bytes of memory available to new work now (Linux MemAvailable, else the free pages), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.0f} MB"


def check_memory(config: WorldConfig, parallel: int) -> None:
    """One-line error, before anything is written, when `parallel` clips at once would not fit in the memory
    available now (they would die with a MemoryError, or swap the machine to a halt)."""
    need, free = clip_memory(config) * parallel, available_memory()
    if free is None or need <= free:
        return
    each = f"{parallel} clips at once (--workers), each" if parallel > 1 else "one clip"
    raise ConfigError(f"{each} of {config.n_frames} frames of {config.height}x{config.width} pixels and "
                      f"{config.n_samples} audio samples needs about {_size(need)} of memory while it is made, but "
                      f"{_size(free)} is available: use a smaller --size, --duration or --fps"
                      + (" or fewer --workers" if parallel > 1 else ""))  # fmt: skip


def _settings(seed: int, config: dict) -> dict:
    """What makes a dataset's clips what they are, as its settings file holds it (json types)."""
    return json.loads(json.dumps({"seed": seed, "config": config}))


def _clips_on_disk(out: Path) -> dict[str, set[int]]:
    """The indices of the clips of which any file is in out/{split}/, per split."""
    found: dict[str, set[int]] = {split: set() for split in SPLITS}
    for split in SPLITS:
        if (out / split).is_dir():
            for path in (out / split).iterdir():
                if (m := CLIP_FILE.fullmatch(path.name)) and m[1] == split:
                    found[split].add(int(m[2]))
    return found


def _settings_on_disk(out: Path, clips: dict[str, set[int]]) -> list[dict]:
    """The settings the dataset in `out` was made with: its settings file, or (a dataset written before there was
    one) those of every clip json there."""
    record = out / SETTINGS_FILE
    if record.exists():
        try:
            settings = json.loads(record.read_text())
            return [_settings(settings["seed"], settings["config"])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OutputError(f"{record}: cannot read the dataset's settings ({exc}); pass --overwrite (or -y) to "
                              "replace the dataset") from None  # fmt: skip
    found = []
    for split, indices in clips.items():
        for index in sorted(indices):
            try:
                meta = json.loads((out / split / f"{split}_{index:06d}.json").read_text())
                settings = _settings((meta["seed"] - SPLIT_SEED_BASE[split]) // SEEDS_PER_RUN, meta["config"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # no json yet (an interrupted write): the clip is made again
            if settings not in found:
                found.append(settings)
    return found


def _options(settings: dict) -> dict[str, str]:
    """A dataset's settings as the `avflow world` options that give them (`--size H W`), else as `field=value`."""
    config = settings["config"]
    words = {"seed": f"--seed {settings['seed']}", "size": f"--size {config.get('height')} {config.get('width')}"}
    for key, value in config.items():
        if key not in ("height", "width"):
            value = ",".join(map(str, value)) if isinstance(value, list) else value
            words[key] = f"{OPTIONS[key]} {value}" if key in OPTIONS else f"{key}={value}"
    return words


def _smallest_n(clips: dict[str, set[int]], start: int = 1) -> int:
    """The smallest --n from `start` on whose splits hold every clip index in `clips` (a bigger one may not: 14
    clips split 12/1/1, 15 split 11/2/2)."""
    n = max(start, sum(map(len, clips.values())))
    while any(indices and max(indices) >= split_sizes(n)[split] for split, indices in clips.items()):
        n += 1
    return n


def check_existing(out: Path, n: int, seed: int, config: WorldConfig) -> None:
    """One-line error unless `out` is empty of world clips or holds this very dataset (same seed and config, so a
    rerun resumes it or a bigger --n extends it) with no clip beyond the `n` asked for (the manifests list `n`).
    Reads nothing of a clip but its json, and that only where there is no settings file."""
    clips = _clips_on_disk(out)
    want = _settings(seed, asdict(config))
    for have in _settings_on_disk(out, clips):
        if have != want:
            old, new = _options(have), _options(want)
            keys = [k for k in {**old, **new} if old.get(k) != new.get(k)]
            raise OutputError(f"{out} holds a world dataset made with other settings: "
                              f"{', '.join(old.get(k, f'no {k}') for k in keys)} (this run: "
                              f"{', '.join(new.get(k, f'no {k}') for k in keys)}); pass --overwrite (or -y) to "
                              "replace it, or choose another --out")  # fmt: skip
    sizes = split_sizes(n)
    beyond = {split: {i for i in indices if i >= sizes[split]} for split, indices in clips.items()}
    if extra := sum(map(len, beyond.values())):
        held = sum(map(len, clips.values()))
        keep, grow = _smallest_n(clips), _smallest_n(clips, n)
        other = f"--n {keep} to keep them" + (f", or --n {grow} (the smallest above {n} that does)" if grow != keep
                                               else "")  # fmt: skip
        raise OutputError(f"{out} holds {held} clips of this dataset, {extra} of them beyond what --n {n} makes (a "
                          "bigger --n extends a dataset only where no split gets smaller): pass --overwrite (or -y) "
                          f"to replace it with {n} clips, or {other}")  # fmt: skip


def remove_dataset(out: Path) -> None:
    """Deletes the world dataset in `out` (its clips, manifests and settings file); other files stay."""
    for split in SPLITS:
        if (out / split).is_dir():
            for path in (out / split).iterdir():
                if ((m := CLIP_FILE.fullmatch(path.name)) and m[1] == split) or path.name == "manifest.jsonl":
                    path.unlink()
    (out / SETTINGS_FILE).unlink(missing_ok=True)


def make_dataset(out: str | Path, n: int, seed: int = 0, workers: int = 1, preview: bool = False,
                 config: WorldConfig | None = None, progress=None,
                 overwrite: bool = False) -> dict[str, int]:  # fmt: skip
    """Writes out/{train,val,test}/ clips, out/{split}/manifest.jsonl and out/dataset.json (the settings); returns
    the split sizes. A folder holding another dataset, or clips beyond the `n` asked for, is refused before anything
    is written unless `overwrite`, which deletes that dataset first; clips already there from the same settings are
    kept (a rerun resumes, a bigger `n` extends). `progress(row, made)` after each clip (`made`: written now, not
    kept)."""
    if n < 1 or n > SEEDS_PER_RUN:
        raise ConfigError(f"--n must be between 1 and {SEEDS_PER_RUN}, got {n}")
    if not 0 <= seed < (1 << 40) // SEEDS_PER_RUN:
        raise ConfigError(f"--seed must be between 0 and {(1 << 40) // SEEDS_PER_RUN - 1}, got {seed}")
    config = config or WorldConfig()
    out = Path(out)
    check_memory(config, min(workers, n))
    if overwrite:
        remove_dataset(out)
    else:
        check_existing(out, n, seed, config)
    sizes = split_sizes(n)
    settings = json.dumps(_settings(seed, asdict(config)), indent=1) + "\n"
    jobs = [(split, i, seed, str(out), config, preview) for split in SPLITS for i in range(sizes[split])]
    try:
        _write_file(out / SETTINGS_FILE, lambda f: f.write(settings.encode()))
        for split in SPLITS:
            (out / split).mkdir(parents=True, exist_ok=True)
        rows = _run_jobs(jobs, workers, progress)
        for split in SPLITS:
            lines = "".join(json.dumps(r) + "\n" for r in rows if r["id"].startswith(split + "_"))
            _write_file(out / split / "manifest.jsonl", lambda f, text=lines: f.write(text.encode()))
    except ClipWriteError as exc:  # a full disk: the clips written so far stay, a rerun goes on from them
        raise OutputError(f"{exc}; --out {out} keeps the {_whole_clips(out)} whole clips written so far (rerun "
                          "to resume once there is room)") from None  # fmt: skip
    return sizes


def _run_jobs(jobs: list[tuple], workers: int, progress) -> list[dict]:
    """The manifest rows of `jobs` (`_job`), in order, on `workers` processes."""
    rows = []
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            for row, made in pool.imap(_job, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                rows.append(row)
                if progress:
                    progress(row, made)
        return rows
    for job in jobs:
        row, made = _job(job)
        rows.append(row)
        if progress:
            progress(row, made)
    return rows


def _whole_clips(out: Path) -> int:
    """How many clips in `out` have their json (written last: the clip is whole)."""
    return sum(len(list((out / split).glob(f"{split}_*.json"))) for split in SPLITS if (out / split).is_dir())


def with_overrides(config: WorldConfig, **overrides) -> WorldConfig:
    """A copy of `config` with some fields changed (validated again)."""
    return replace(config, **overrides)


def read_manifest(root: str | Path, split: str) -> list[dict]:
    """The rows of `root/split/manifest.jsonl` (one dict per clip)."""
    path = Path(root) / split / "manifest.jsonl"
    if not path.is_file():
        raise MediaError(f"{path}: no such manifest (make the dataset with `avflow world make`)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
