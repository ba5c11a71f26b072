"""The procedural audio-visual world: determinism, sync, spatial signs, masks, captions, dataset layout."""

from __future__ import annotations

import importlib.util
import json
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from avflow.cli import main as cli_main
from avflow.errors import ConfigError, MediaError, OutputError
from avflow.world import dataset as world_dataset
from avflow.world.binaural import azimuth_deg, block_times, render_binaural
from avflow.world.caption import MATERIAL_WORDS, SIDE_WORDS, make_caption, object_clause, object_side
from avflow.world.dataset import clip_seed, load_clip, make_clip, make_dataset, render_audio, rerender_audio, write_clip
from avflow.world.scene import Event, Scene, SceneObject, WorldConfig, sample_scene, simulate

SEEDS = (3, 11, 42)


def _scene(seed: int, **overrides) -> Scene:
    return sample_scene(WorldConfig(**overrides), np.random.default_rng(seed), seed=seed)


def _itd_seconds(stereo: np.ndarray, sample_rate: int, max_lag: int = 24) -> float:
    """ITD by cross-correlation: the lag of the right ear behind the left (> 0 when the left ear leads)."""
    left, right = stereo
    lags = np.arange(-max_lag, max_lag + 1)
    core = slice(max_lag, len(left) - max_lag)
    scores = [np.dot(right[core], np.roll(left, lag)[core]) for lag in lags]
    return float(lags[int(np.argmax(scores))]) / sample_rate


def _ild_db(stereo: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(stereo[0] ** 2)) / np.sqrt(np.mean(stereo[1] ** 2))))


def test_same_seed_gives_identical_files(tmp_path):
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        write_clip(make_clip(7), tmp_path / run / "clip")
    for suffix in (".wav", ".npz", ".json"):
        assert (tmp_path / "a" / f"clip{suffix}").read_bytes() == (tmp_path / "b" / f"clip{suffix}").read_bytes()
    assert (tmp_path / "a" / "clip.wav").read_bytes() != _bytes_of_other_seed(tmp_path)


def _bytes_of_other_seed(tmp_path) -> bytes:
    write_clip(make_clip(8), tmp_path / "other")
    return (tmp_path / "other.wav").read_bytes()


def test_written_audio_is_the_rendered_scene():
    clip = make_clip(SEEDS[0])
    scene = _scene(SEEDS[0])
    expected = (render_audio(scene) * clip.meta["audio_gain"]).astype(np.float32)
    np.testing.assert_allclose(clip.audio, expected, atol=1e-6)
    assert clip.audio.shape == (2, WorldConfig().n_samples) and clip.audio.dtype == np.float32
    assert [e["time"] for e in clip.meta["events"]] == [e.time for e in scene.events]


def test_rerender_changes_the_ambience_only():
    """The estimator floor's clip: its own seed gives the clip back; another draws only another background noise."""
    clip = make_clip(SEEDS[1], WorldConfig(duration=1.0))
    np.testing.assert_allclose(rerender_audio(clip.meta), clip.audio, atol=1e-6)
    other = rerender_audio(clip.meta, ambience_seed=SEEDS[1] + 1)
    diff = other - clip.audio  # the difference of two independent ambience draws: rms sqrt(2) * ambience * gain
    expected = np.sqrt(2) * WorldConfig().ambience * clip.meta["audio_gain"]
    assert np.sqrt(np.mean(diff**2, axis=1)) == pytest.approx([expected, expected], rel=0.2)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_event_onset_within_1ms(seed):
    scene = _scene(seed, rolling_sound=False, ambience=0.0)
    sr = scene.config.sample_rate
    assert len(scene.events) >= 3
    total = np.zeros((2, scene.config.n_samples))
    for index, event in enumerate(scene.events):
        audio = render_audio(scene, events=[index], rolling=False, with_ambience=False)  # (2, N)
        total += audio
        envelope = np.abs(audio).max(axis=0)
        onset = int(np.argmax(envelope > 0.1 * envelope.max())) / sr
        assert abs(onset - event.time) <= 1e-3, (index, event, onset)
        assert not np.any(envelope[: max(int(event.time * sr) - 1, 0)]), "sound before its event"
    # the per-event renders are the parts of the clip's mix (up to the -80 dB truncation of each ringing mode)
    full = render_audio(scene)
    np.testing.assert_allclose(total, full, atol=1e-3 * np.abs(full).max())


def test_first_onset_in_the_wav(tmp_path):
    config = WorldConfig(rolling_sound=False, ambience=0.0)
    clip = make_clip(SEEDS[1], config)
    write_clip(clip, tmp_path / "c")
    audio, sr = sf.read(tmp_path / "c.wav", dtype="float32")
    envelope = np.abs(audio).max(axis=1)
    onset = int(np.argmax(envelope > 0.01 * envelope.max())) / sr
    assert abs(onset - clip.meta["events"][0]["time"]) <= 1e-3


def _resting_scene(x_fraction: float, material: str = "wood") -> Scene:
    config = WorldConfig(min_objects=1, max_objects=1, rolling_sound=False, ambience=0.0)
    size = 5.0
    x = min(max(x_fraction * config.width, size), config.width - size)
    obj = SceneObject("circle", "red", size, material, 0.5, (x, config.height - size), (0.0, 0.0))
    scene = Scene(config, seed=0, objects=[obj])
    simulate(scene)
    scene.events = [Event(0.5, 0, "floor", (x, float(config.height)), 3.0 * config.height)]
    return scene


@pytest.mark.parametrize("hrtf", ["sphere", "kemar"])
def test_left_and_right_edges_give_opposite_ild_and_itd(hrtf):
    if hrtf == "kemar" and importlib.util.find_spec("slab") is None:
        pytest.skip("optional `slab` package (KEMAR data) is not installed")
    signs = {}
    for side, x_fraction in (("left", 0.0), ("right", 1.0)):
        scene = _resting_scene(x_fraction)
        scene.config.hrtf = hrtf
        cfg = scene.config
        x = scene.trajectories.at(block_times(cfg.n_samples, cfg.sample_rate))[:, :, 0]  # (1, B)
        assert abs(azimuth_deg(x, cfg.width).mean()) > 30  # near the edge of the 90 deg field of view
        noise = np.random.default_rng(1).standard_normal((1, cfg.n_samples))
        stereo = render_binaural(noise, x, cfg.width, cfg.sample_rate, hrtf)
        impact = render_audio(scene)
        signs[side] = (_ild_db(stereo), _itd_seconds(stereo, cfg.sample_rate), _ild_db(impact))
    ild, itd, impact_ild = signs["left"]
    assert ild > 1.0 and itd > 0 and impact_ild > 0
    ild, itd, impact_ild = signs["right"]
    assert ild < -1.0 and itd < 0 and impact_ild < 0
    assert signs["left"][1] == pytest.approx(-signs["right"][1])


def test_event_azimuths_are_the_sounding_objects_centres():
    """CONVENTIONS: azimuth = (x_center / W - 0.5) * 90 of the object that sounds; a wall hit's contact point sits at
    the frame's edge (±45°, which it always read before) while the sound is rendered from the object's centre."""
    cfg = WorldConfig()
    walls = 0
    for seed in range(6):
        clip = make_clip(seed, cfg)
        track = np.array(clip.meta["trajectories"])  # (K, T, 2) at frame times k / fps
        for e in clip.meta["events"]:
            frame = min(int(round(e["time"] * cfg.fps)), cfg.n_frames - 1)
            x = track[e["object"], frame, 0]  # within a frame's motion (a few px) of the centre at the event
            assert abs(e["azimuth"] - (x / cfg.width - 0.5) * 90) < 10, (seed, e)
            if e["other"] is not None:
                x = track[e["other"], frame, 0]
                assert abs(e["other_azimuth"] - (x / cfg.width - 0.5) * 90) < 10, (seed, e)
            else:
                assert e["other_azimuth"] is None
            if e["surface"] == "wall":
                walls += 1
                assert abs(e["azimuth"]) < 45 - 1e-6, e  # the centre is a radius inside the wall
    assert walls > 0


def test_centre_source_is_balanced():
    scene = _resting_scene(0.5)
    cfg = scene.config
    x = scene.trajectories.at(block_times(cfg.n_samples, cfg.sample_rate))[:, :, 0]
    stereo = render_binaural(np.random.default_rng(2).standard_normal((1, cfg.n_samples)), x, cfg.width,
                             cfg.sample_rate)  # fmt: skip
    assert abs(_ild_db(stereo)) < 0.1 and _itd_seconds(stereo, cfg.sample_rate) == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_masks_match_rendered_pixels(seed):
    clip = make_clip(seed)
    frames, masks = clip.frames, clip.masks
    T, K, H, W = masks.shape
    assert frames.shape == (T, H, W, 3) and frames.dtype == np.uint8 and masks.dtype == bool
    assert K == len(clip.meta["objects"]) and T == clip.meta["n_frames"]
    assert masks.sum(axis=1).max() <= 1  # visible masks do not overlap
    traj = np.asarray(clip.meta["trajectories"])  # (K, T, 2)
    for k, obj in enumerate(clip.meta["objects"]):
        pixels = frames.transpose(0, 1, 2, 3)[masks[:, k]]  # (P, 3)
        assert pixels.size and np.all(pixels == np.asarray(obj["rgb"], dtype=np.uint8))
        full = np.pi * obj["size"] ** 2 if obj["shape"] == "circle" else 4 * obj["size"] ** 2
        for t in range(T):
            m = masks[t, k]
            if m.sum() > 0.9 * full:  # unoccluded: the mask is centred on the ground-truth position
                ys, xs = np.nonzero(m)
                assert abs(xs.mean() + 0.5 - traj[k, t, 0]) < 1.0 and abs(ys.mean() + 0.5 - traj[k, t, 1]) < 1.0
    # pixels outside every mask are background, not some object colour mixed in
    colours = {tuple(o["rgb"]) for o in clip.meta["objects"]}
    outside = frames[~masks.any(axis=1)]
    assert not any(tuple(p) in colours for p in np.unique(outside, axis=0))


def test_physics_stays_in_the_box_and_events_touch_surfaces():
    for seed in SEEDS:
        scene = _scene(seed)
        cfg = scene.config
        times = np.linspace(0, cfg.duration, 2000)
        pos = scene.trajectories.at(times)
        for k, obj in enumerate(scene.objects):
            assert np.all(pos[k] >= obj.size - 1e-6) and np.all(pos[k, :, 0] <= cfg.width - obj.size + 1e-6)
            assert np.all(pos[k, :, 1] <= cfg.height - obj.size + 1e-6)
        assert all(a.time <= b.time for a, b in zip(scene.events, scene.events[1:]))
        for e in scene.events:
            p = scene.trajectories.at(np.array([e.time]))[e.object, 0]
            size = scene.objects[e.object].size
            if e.surface == "floor":
                assert p[1] == pytest.approx(cfg.height - size, abs=1e-6)
            elif e.surface == "wall":
                assert min(p[0] - size, cfg.width - size - p[0]) == pytest.approx(0, abs=1e-6)
            elif e.surface == "object":
                q = scene.trajectories.at(np.array([e.time]))[e.other, 0]
                assert np.hypot(*(p - q)) == pytest.approx(size + scene.objects[e.other].size, abs=0.1)


def test_captions_mention_every_material_and_side():
    captions = []
    for seed in range(12):
        scene = _scene(seed)
        caption = make_caption(scene)
        captions.append(caption)
        for k, obj in enumerate(scene.objects):
            clause = object_clause(scene, k, np.random.default_rng(seed))
            side_words = SIDE_WORDS[object_side(scene, k)]
            for text in (caption, clause):
                assert MATERIAL_WORDS[obj.material] in text and obj.colour in text
            assert any(w in clause for w in side_words), (clause, side_words)
            assert any(w in caption for w in side_words)
    assert len(set(captions)) == len(captions)
    assert len({c.split()[0] for c in captions}) >= 3  # not one fixed template


def test_dataset_layout_manifest_and_reader(tmp_path):
    sizes = make_dataset(tmp_path / "ds", 5, seed=3, workers=2)
    assert sizes == {"train": 3, "val": 1, "test": 1}
    seeds = set()
    for split, n in sizes.items():
        rows = [json.loads(line) for line in (tmp_path / "ds" / split / "manifest.jsonl").read_text().splitlines()]
        assert len(rows) == n
        for row in rows:
            assert set(row) == {"id", "duration", "fps", "sample_rate", "caption", "n_events"}
            assert row["id"].startswith(split + "_")
            clip = load_clip(tmp_path / "ds" / split / row["id"])
            assert clip.audio.shape == (2, 64000) and clip.audio.dtype == np.float32
            assert clip.frames.shape == (64, 64, 64, 3) and clip.masks.shape[0] == 64
            assert clip.meta["caption"] == row["caption"] and len(clip.meta["events"]) == row["n_events"]
            seeds.add(clip.meta["seed"])
    assert len(seeds) == 5
    # the parallel run wrote exactly what a single process writes
    make_dataset(tmp_path / "serial", 5, seed=3, workers=1)
    for split in sizes:
        for f in sorted((tmp_path / "ds" / split).iterdir()):
            assert f.read_bytes() == (tmp_path / "serial" / split / f.name).read_bytes(), f


def test_dataset_resumes_and_remakes_what_differs(tmp_path):
    """A second run keeps the clips already written from the same seed and config (a bigger --n extends a dataset),
    and renders again a clip written from another config or left incomplete."""
    config = WorldConfig(duration=1.0, fps=8, width=32, height=32)
    make_dataset(tmp_path, 3, seed=1, config=config)
    stems = {split: tmp_path / split / f"{split}_000000" for split in ("train", "val", "test")}
    before = {s: p.with_suffix(".npz").stat().st_mtime_ns for s, p in stems.items()}
    meta = json.loads(stems["val"].with_suffix(".json").read_text())
    meta["config"]["fps"] = 16  # as if written by another world config
    stems["val"].with_suffix(".json").write_text(json.dumps(meta))
    stems["test"].with_suffix(".npz").unlink()  # an interrupted write
    assert make_dataset(tmp_path, 12, seed=1, config=config) == {"train": 10, "val": 1, "test": 1}
    assert stems["train"].with_suffix(".npz").stat().st_mtime_ns == before["train"]  # kept
    assert stems["val"].with_suffix(".npz").stat().st_mtime_ns != before["val"]  # made again
    assert json.loads(stems["val"].with_suffix(".json").read_text())["config"]["fps"] == 8
    assert load_clip(stems["test"]).frames.shape == (8, 32, 32, 3)
    rows = (tmp_path / "train" / "manifest.jsonl").read_text().splitlines()
    assert len(rows) == 10 and json.loads(rows[0])["caption"] == load_clip(stems["train"]).meta["caption"]


def test_cli_and_errors(tmp_path, capsys):
    assert cli_main(["world", "make", "--n", "1", "--out", str(tmp_path / "w"), "--duration", "1"]) == 0
    assert (tmp_path / "w" / "train" / "train_000000.wav").is_file()
    assert "wrote 1 clips to" in capsys.readouterr().out
    # a rerun that extends says what it made and what it kept (it said "wrote 2 clips" for one new clip)
    assert cli_main(["world", "make", "--n", "2", "--out", str(tmp_path / "w"), "--duration", "1"]) == 0
    assert "wrote 1 clips to " + str(tmp_path / "w") + ", kept the 1 already there" in capsys.readouterr().out
    assert cli_main(["world", "make", "--n", "1", "--out", str(tmp_path / "w"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    # before any clip: an --out that is a file (was an errno), an odd size with mp4 previews (failed at the first
    # preview), a clip of no frames (was written)
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    cases = {("--out", str(taken / "w")): f"{taken} is a file, not a folder",
             ("--size", "33", "32", "--preview"): "--preview writes h264, which needs an even --size; got 33 32",
             ("--duration", "0.01"): "a world clip needs at least 2 frames: 0.01 s at 16 fps gives 0"}  # fmt: skip
    for extra, message in cases.items():
        assert cli_main(["world", "--n", "1", "--out", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert not (tmp_path / "x").exists()
    with pytest.raises(MediaError, match="missing"):
        load_clip(tmp_path / "nothing")


TINY = ("--size", "16", "16", "--fps", "8", "--duration", "0.25", "--sample-rate", "4000")  # 2 frames, 1000 samples
TINY_CONFIG = WorldConfig(height=16, width=16, fps=8, duration=0.25, sample_rate=4000)


def _world(out, n: int, *extra: str) -> int:
    return cli_main(["world", "--n", str(n), "--out", str(out), *TINY, *extra])


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _check_consistent(root, seed: int) -> list[str]:
    """The clip ids on disk, asserting that they are exactly the manifests' rows and all of `seed`."""
    ids = []
    for split in ("train", "val", "test"):
        rows = [json.loads(line)["id"] for line in (root / split / "manifest.jsonl").read_text().splitlines()]
        on_disk = sorted({p.stem for p in (root / split).iterdir() if p.name != "manifest.jsonl"})
        assert on_disk == rows, (split, on_disk, rows)
        for index, clip_id in enumerate(rows):
            assert json.loads((root / split / f"{clip_id}.json").read_text())["seed"] == clip_seed(split, seed, index)
        ids += rows
    return ids


def test_a_dataset_of_other_settings_is_refused_unless_overwrite(tmp_path, capsys):
    """Writing into a dataset made with other settings (was: clips of two seeds mixed, the manifest listing only the
    new ones) is a one-line error naming the setting, before anything is written; -y replaces the dataset whole."""
    out = tmp_path / "wA"
    assert _world(out, 10) == 0
    capsys.readouterr()
    before = _files(out)
    cases = {("--n", "5", "--seed", "3"): "--seed 0 (this run: --seed 3)",
             ("--fps", "16"): "--fps 8 (this run: --fps 16)",
             ("--size", "16", "24"): "--size 16 16 (this run: --size 16 24)",
             ("--sample-rate", "8000"): "--sample-rate 4000 (this run: --sample-rate 8000)",
             ("--duration", "0.5"): "--duration 0.25 (this run: --duration 0.5)"}  # fmt: skip
    for extra, message in cases.items():
        assert _world(out, 10, *extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and "--overwrite" in err and "\n" not in err, err
    with pytest.raises(OutputError, match=r"max_objects=4 \(this run: max_objects=2\)"):  # any generation option
        make_dataset(out, 10, config=WorldConfig(**{**TINY_CONFIG.__dict__, "max_objects": 2}))
    assert _files(out) == before  # nothing rendered or removed
    # with -y the old dataset goes entirely: 5 clips of seed 3, no clip of seed 0 left beside them
    assert _world(out, 5, "--seed", "3", "-y") == 0
    assert len(_check_consistent(out, 3)) == 5
    assert json.loads((out / "dataset.json").read_text())["seed"] == 3


def test_a_dataset_without_a_settings_file_is_judged_by_its_clips(tmp_path):
    """A dataset written before dataset.json existed: its clip jsons say which settings it was made with."""
    make_dataset(tmp_path, 3, seed=0, config=TINY_CONFIG)
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(OutputError, match=r"--seed 0 \(this run: --seed 1\)"):
        make_dataset(tmp_path, 3, seed=1, config=TINY_CONFIG)
    assert make_dataset(tmp_path, 4, seed=0, config=TINY_CONFIG) == {"train": 2, "val": 1, "test": 1}
    assert json.loads((tmp_path / "dataset.json").read_text())["seed"] == 0
    assert len(_check_consistent(tmp_path, 0)) == 4


def test_clips_beyond_n_are_refused_so_manifest_and_files_agree(tmp_path, capsys):
    """A smaller --n (or a bigger one whose train split is smaller: 14 -> 15 splits 12/1/1 -> 11/2/2) would leave
    clips that no manifest lists: refused in one line, unless -y, which makes the dataset anew at that size."""
    assert _world(tmp_path, 10) == 0
    before = _files(tmp_path)
    capsys.readouterr()
    assert _world(tmp_path, 5) == 2
    err = capsys.readouterr().err.strip()
    assert "holds 10 clips of this dataset, 5 of them beyond what --n 5 makes" in err and "--n 10 to keep" in err
    assert "\n" not in err and _files(tmp_path) == before
    assert make_dataset(tmp_path, 14, config=TINY_CONFIG) == {"train": 12, "val": 1, "test": 1}  # extends
    assert {k: v for k, v in _files(tmp_path).items() if "000007" in k} == {
        k: v for k, v in before.items() if "000007" in k
    }  # kept, not made again
    with pytest.raises(OutputError, match="1 of them beyond what --n 15 makes.* --n 14 to keep them"):
        make_dataset(tmp_path, 15, config=TINY_CONFIG)
    assert make_dataset(tmp_path, 5, config=TINY_CONFIG, overwrite=True) == {"train": 3, "val": 1, "test": 1}
    assert len(_check_consistent(tmp_path, 0)) == 5


def test_non_finite_numbers_are_refused_in_one_line(tmp_path, capsys):
    """--duration nan / inf were tracebacks (cannot convert float NaN to integer; OverflowError)."""
    cases = {("--duration", "nan"): "world duration must be a finite number, got nan",
             ("--duration", "inf"): "world duration must be a finite number, got inf",
             ("--duration=-inf",): "world duration must be a finite number, got -inf",
             ("--duration", "1e308"): "world duration 1e+308 s is too long"}  # fmt: skip
    for extra, message in cases.items():
        assert cli_main(["world", "--n", "1", "--out", str(tmp_path / "w"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    assert not (tmp_path / "w").exists()
    for field in ("fps", "duration", "gravity", "rolling_friction", "rest_speed", "min_event_speed", "ambience",
                  "gain"):  # fmt: skip
        for value in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(ConfigError, match=f"world {field} must be a finite number"):
                WorldConfig(**{field: value})


def test_a_clip_too_big_for_the_memory_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """--size 20000 20000 died in a MemoryError traceback and left empty folders."""
    monkeypatch.setattr("avflow.world.dataset.available_memory", lambda: 2 * 10**9)
    out = tmp_path / "w"
    assert cli_main(["world", "--n", "1", "--out", str(out), "--size", "20000", "20000", "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "one clip of 16 frames of 20000x20000 pixels" in err and "needs about 134.4 GB" in err, err
    assert "2.0 GB is available" in err and "\n" not in err
    need = world_dataset.clip_memory(TINY_CONFIG)
    monkeypatch.setattr("avflow.world.dataset.available_memory", lambda: int(1.5 * need))
    assert _world(out, 2, "--workers", "2") == 2  # two clips at once do not fit, one does
    assert "2 clips at once (--workers)" in capsys.readouterr().err
    assert not out.exists()
    assert _world(out, 2) == 0


@pytest.mark.parametrize("size, fps, sample_rate, objects", [(16, 8, 16000, 4), (128, 16, 4000, 4), (96, 8, 4000, 9)])
def test_clip_memory_bounds_what_a_clip_holds(tmp_path, size, fps, sample_rate, objects):
    """The estimate the memory check uses is above the peak that making and writing a clip reaches, and close."""
    config = WorldConfig(height=size, width=size, fps=fps, duration=0.5, sample_rate=sample_rate,
                         min_objects=objects, max_objects=objects)  # fmt: skip
    make_clip(1, config)  # warm the caches (the ambience bank) that later clips share
    tracemalloc.start()
    try:
        write_clip(make_clip(1, config), tmp_path / "clip")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= world_dataset.clip_memory(config) <= 2.5 * peak
