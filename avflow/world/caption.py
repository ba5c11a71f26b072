"""Templated, varied captions from a simulated scene; every object's colour, material, shape and side appear."""

from __future__ import annotations

import numpy as np

from avflow.world.scene import Scene

MATERIAL_WORDS = {"wood": "wooden", "metal": "metal", "glass": "glass", "rubber": "rubber"}
SHAPE_WORDS = {"circle": ("ball", "ball", "sphere"), "square": ("block", "cube", "box")}
SIDE_PHRASES = {
    "left": ("on the left", "on the left side", "at the left"),
    "right": ("on the right", "on the right side", "at the right"),
    "middle": ("in the middle", "in the centre", "near the middle"),
}
SIDE_WORDS = {"left": ("left",), "right": ("right",), "middle": ("middle", "centre")}
COUNT_WORDS = {1: "once", 2: "twice", 3: "three times"}


def object_side(scene: Scene, k: int) -> str:
    """'left', 'middle' or 'right' from the object's mean x over the clip."""
    config = scene.config
    times = np.linspace(0, config.duration, 4 * config.n_frames)
    x = float(scene.trajectories.at(times)[k, :, 0].mean()) / config.width
    return "left" if x < 1 / 3 else "right" if x > 2 / 3 else "middle"


def _count(n: int, rng: np.random.Generator) -> str:
    if n in COUNT_WORDS:
        return COUNT_WORDS[n]
    return (
        str(rng.choice(["a few times", "several times"])) if n <= 5 else str(rng.choice(["many times", "repeatedly"]))
    )


def object_clause(scene: Scene, k: int, rng: np.random.Generator) -> str:
    """One clause describing object k, e.g. 'a red metal ball bounces twice on the left, then rolls'."""
    obj = scene.objects[k]
    noun = str(rng.choice(SHAPE_WORDS[obj.shape]))
    name = f"{obj.colour} {MATERIAL_WORDS[obj.material]} {noun}"
    side = str(rng.choice(SIDE_PHRASES[object_side(scene, k)]))
    mine = [e for e in scene.events if k in (e.object, e.other)]
    n_floor = sum(e.surface == "floor" for e in mine)
    walls = sum(e.surface == "wall" for e in mine)
    partners = sorted({e.other if e.object == k else e.object for e in mine if e.surface == "object"})
    if n_floor:
        verb = str(rng.choice(["bounces", "hops", "bounces"])) + " " + _count(n_floor, rng)
    else:
        verb = str(rng.choice(["flies", "drifts", "moves"]))
    article = "an" if name[0] in "aeiou" else "a"
    main = f"{article} {name} {verb} {side}" if rng.random() < 0.6 else f"{side}, {article} {name} {verb}"
    extras = []
    if walls:
        extras.append(str(rng.choice(["hits the wall", "bumps a wall", "strikes the wall"])))
    for j in partners[:1]:
        other = scene.objects[j]
        extras.append(
            f"{rng.choice(['knocks into', 'collides with', 'hits'])} the {other.colour} {SHAPE_WORDS[other.shape][0]}"
        )
    traj = scene.trajectories
    end_t = np.array([scene.config.duration])
    on_floor, moving = bool(traj.floor_at(end_t)[k, 0]), abs(float(traj.velocity_at(end_t)[k, 0, 0])) > 0.5
    rolled = bool(np.any(traj.on_floor[k] & (np.abs(traj.v0[k][:, 0]) > 0.5)))
    if rolled or (on_floor and moving):
        words = ["rolls", "rolls along the floor"] if obj.shape == "circle" else ["slides", "scrapes along the floor"]
        extras.append(str(rng.choice(words)))
    elif on_floor:
        extras.append(str(rng.choice(["comes to rest", "settles", "stops"])))
    if not extras:
        return main
    if len(extras) == 1:
        return f"{main}, {rng.choice(['then', 'and then', 'and'])} {extras[0]}"
    return f"{main}, {', '.join(extras[:-1])} and {extras[-1]}"


def make_caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """The clip caption: object clauses joined in a varied way."""
    rng = np.random.default_rng([scene.seed, 6]) if rng is None else rng
    order = list(range(len(scene.objects)))
    if rng.random() < 0.5:
        rng.shuffle(order)
    clauses = [object_clause(scene, k, rng) for k in order]
    if len(clauses) == 1:
        return clauses[0]
    joiner = str(rng.choice(["; ", ", while ", ". ", " and "]))
    text = joiner.join(clauses)
    if rng.random() < 0.3:
        text = f"{len(clauses)} objects: {text}"
    return text
