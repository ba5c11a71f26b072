"""Prompt checks on ground-truth world clips (they must pass) and on frames that must fail."""

from __future__ import annotations

import numpy as np
import pytest

from avflow.eval.prompt_checks import NamedObject, floor_contacts, parse_prompt, side_of, track_named_object
from avflow.world.dataset import make_clip
from avflow.world.scene import WorldConfig


def test_parse_prompt_objects_sides_and_counts():
    two = (
        "on the right, a purple glass ball hops three times, collides with the white block and rolls along the "
        "floor; in the middle, a white metal box hops twice, hits the purple ball and scrapes along the floor"
    )
    want = [NamedObject("purple", "circle", "right", 3, True), NamedObject("white", "square", "middle", 2, True)]
    assert parse_prompt(two) == want
    assert parse_prompt("a red metal sphere bounces a few times in the centre") == [
        NamedObject("red", "circle", "middle", None, True)
    ]
    assert parse_prompt("a dog barks") == []


@pytest.mark.parametrize("joiner", ["; ", ", while ", ". ", " and "])
def test_parse_prompt_keeps_each_clause_to_its_object(joiner):
    """The second object never takes the first one's side, count or verb, whichever way the clauses are joined."""
    first = "a green wooden cube hops twice on the left, and then hits the blue ball"
    for second, want in (
        ("a blue glass ball drifts at the right", NamedObject("blue", "circle", "right", None, False)),
        ("in the middle, a blue glass ball flies", NamedObject("blue", "circle", "middle", None, False)),
    ):
        got = parse_prompt(f"2 objects: {first}{joiner}{second}")
        assert got == [NamedObject("green", "square", "left", 2, True), want]


@pytest.mark.parametrize("seed", [3, 11, 19])
def test_ground_truth_world_clips_pass(seed):
    config = WorldConfig(duration=2.0, min_objects=1, max_objects=1)
    clip = make_clip(seed, config)
    (obj,) = parse_prompt(clip.meta["caption"])
    track = track_named_object(clip.frames, obj)
    assert track.shown_fraction >= 0.9
    assert side_of(track.mean_x, config.width)[obj.side]
    floor_times = np.array([e["time"] for e in clip.meta["events"] if e["surface"] == "floor"])
    contacts = floor_contacts(track, clip.meta["fps"])
    for t in contacts:  # every visible contact is a real floor bounce (within one frame)
        assert np.min(np.abs(floor_times - t)) < 1 / clip.meta["fps"]


def test_blank_and_flooded_frames_fail():
    obj = NamedObject("red", "circle", "left", None)
    blank = np.zeros((8, 64, 64, 3), np.uint8)
    track = track_named_object(blank, obj)
    assert track.shown_fraction == 0 and set(track.reasons) == {"colour absent"}
    flooded = np.zeros((8, 64, 64, 3), np.uint8)
    flooded[:, :, :32] = (220, 40, 40)
    assert "of the frame is red" in track_named_object(flooded, obj).reasons[0]
    two = np.zeros((8, 64, 64, 3), np.uint8)
    two[:, 10:18, 10:18] = (220, 40, 40)
    two[:, 40:48, 40:48] = (220, 40, 40)
    assert track_named_object(two, obj).reasons[0] == "several components"
