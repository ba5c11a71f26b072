"""A mirrored world clip is the clip of the mirrored scene: checked against re-simulating the scene mirrored."""

from dataclasses import replace

import numpy as np
import pytest

from avflow.world.caption import object_side
from avflow.world.dataset import make_clip, render_audio
from avflow.world.mirror import mirror_caption, mirror_clip
from avflow.world.render import render_frames
from avflow.world.scene import Scene, WorldConfig, simulate

CONFIG = WorldConfig(width=64, height=64, fps=16, duration=1.0, sample_rate=16000, min_objects=1, max_objects=2)


def test_caption_swaps_whole_side_words_only():
    caption = "On the left, a bright red ball bounces twice. a blue block at the right; one in the middle"
    assert mirror_caption(caption) == (
        "On the right, a bright red ball bounces twice. a blue block at the left; one in the middle"
    )
    assert mirror_caption("Left and right") == "Right and left"
    assert mirror_caption(mirror_caption(caption)) == caption


def mirrored_scene(seed: int, config: WorldConfig) -> Scene:
    """The scene of make_clip(seed) with every initial x and horizontal velocity mirrored, simulated again."""
    from avflow.world.scene import sample_scene

    scene = sample_scene(config, np.random.default_rng(seed), seed=seed)
    objects = [
        replace(o, position=(config.width - o.position[0], o.position[1]), velocity=(-o.velocity[0], o.velocity[1]))
        for o in scene.objects
    ]
    mirrored = Scene(config, seed, objects, background=scene.background)
    simulate(mirrored)
    return mirrored


@pytest.mark.parametrize("seed", [3, 11])
def test_mirrored_clip_matches_the_mirrored_scene(seed):
    config = replace(CONFIG, ambience=0.0)  # ambience is drawn per ear; without it the mix is the objects' alone
    clip = make_clip(seed, config)
    mirror = mirror_clip(clip)
    scene = mirrored_scene(seed, config)
    frames, masks = render_frames(scene)
    assert np.array_equal(frames, mirror.frames) and np.array_equal(masks, mirror.masks)  # pixel-exact
    audio = render_audio(scene) * clip.meta["audio_gain"]  # (2, N) [left, right]
    scale = np.abs(clip.audio).max()
    assert np.abs(audio - mirror.audio).max() < 1e-6 * scale  # float32 rounding (measured 2e-8 to 5e-8)
    # the louder ear of the original is the quieter one of the mirror
    energy, mirror_energy = (clip.audio**2).sum(-1), (mirror.audio**2).sum(-1)
    assert np.allclose(energy[::-1], mirror_energy)
    # the ground truth: sides, caption, events and trajectories of the mirrored scene
    assert [o["side"] for o in mirror.meta["objects"]] == [object_side(scene, k) for k in range(len(scene.objects))]
    centres = scene.trajectories.at(np.array([e.time for e in scene.events]))[:, :, 0]  # (K, E) x of each object
    azimuth = lambda k, i: (centres[k, i] / config.width - 0.5) * 90  # noqa: E731
    assert [e["azimuth"] for e in mirror.meta["events"]] == pytest.approx(
        [azimuth(e.object, i) for i, e in enumerate(scene.events)], abs=1e-6
    )
    others = [(i, e.other) for i, e in enumerate(scene.events) if e.other is not None]
    assert [mirror.meta["events"][i]["other_azimuth"] for i, _ in others] == pytest.approx(
        [azimuth(k, i) for i, k in others], abs=1e-6
    )
    track = np.array(mirror.meta["trajectories"])  # (K, T, 2)
    assert np.abs(track - scene.trajectories.at(np.arange(config.n_frames) / config.fps)).max() < 2e-3
    assert mirror.meta["mirrored"] is True and mirror.meta["caption"] == mirror_caption(clip.meta["caption"])


def test_mirroring_twice_gives_the_clip_back():
    clip = make_clip(5, CONFIG)
    back = mirror_clip(mirror_clip(clip))
    assert np.array_equal(back.frames, clip.frames) and np.array_equal(back.audio, clip.audio)
    assert np.array_equal(back.masks, clip.masks)
    assert "mirrored" not in back.meta and back.meta.keys() == clip.meta.keys()
    assert back.meta["caption"] == clip.meta["caption"]
    assert [o["side"] for o in back.meta["objects"]] == [o["side"] for o in clip.meta["objects"]]
    for key in ("position", "velocity"):
        assert np.allclose([o[key] for o in back.meta["objects"]], [o[key] for o in clip.meta["objects"]])
    assert np.allclose([e["position"] for e in back.meta["events"]], [e["position"] for e in clip.meta["events"]])
    assert np.allclose(back.meta["trajectories"], clip.meta["trajectories"], atol=1e-9)
