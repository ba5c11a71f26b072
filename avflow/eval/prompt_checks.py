"""Does a generated clip show what its prompt names? Model-free checks on world-style prompts.

From the prompt: the named objects (colour and shape words, the side phrase, whether it bounces and how often). Each
object's clause runs from the clause break before its name (the last "; ", ". ", ", while " or " and " between it
and the previous object: the world's joiners) to the break before the next object, so a clause that starts with its
side ("on the left, a red ball ...") keeps it and a clause never takes the previous object's words. From the frames:
per named colour, the pixels within `COLOUR_TOLERANCE` (uint8 RGB) of the world's colour, their connected
components, the largest component's area, compactness and centroid, and the object's floor contacts (its downward
motion turning upward, located between frames by fitting the trajectory on both sides).

A named object "is shown" in a frame when its colour forms one compact component (filling >= half of its bounding
box) of 0.5-2.5x the area of a reference world object of its shape (radius or half side 0.08 of the frame), and
no more than `MAX_COLOUR_FRACTION` of the frame is that colour; it "is shown in the clip" when that holds in at
least half of the frames.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from avflow.eval.sync import _contact_time
from avflow.eval.video_quality import COLOUR_TOLERANCE, colour_mask
from avflow.world.caption import SHAPE_WORDS
from avflow.world.scene import COLOURS

REFERENCE_RADIUS = 0.08  # of min(H, W); the world draws 0.06-0.11, so real objects lie at 0.56-1.9x its area
AREA_RANGE = (0.5, 2.5)  # x the median object's area
MAX_COLOUR_FRACTION = 0.06
SIDE_RANGES = {"left": (0.0, 0.4), "right": (0.6, 1.0), "middle": (0.3, 0.7)}  # mean x / W
COUNTS = {"once": 1, "twice": 2, "three times": 3}
_SIDES = {"left": "left", "right": "right", "middle": "middle", "centre": "middle"}
_SHAPES = {word: shape for shape, words in SHAPE_WORDS.items() for word in words}
_CLAUSE_BREAK = re.compile(r";|\.|, while | and ")  # how `avflow.world.caption` joins two objects' clauses


@dataclass(frozen=True)
class NamedObject:
    colour: str
    shape: str  # "circle" or "square"
    side: str | None  # "left", "middle", "right" or None when the clause names none
    bounces: int | None  # the count the clause names ("twice" -> 2), None when vague or absent
    bouncing: bool = False  # the clause says it bounces or hops (it touches the floor)


def parse_prompt(prompt: str) -> list[NamedObject]:
    """The objects a world-style prompt names, in order: 'a red metal ball bounces twice on the left, ...'."""
    text = prompt.lower()
    pattern = re.compile(rf"\b({'|'.join(COLOURS)})\s+(?:\w+\s+)?({'|'.join(_SHAPES)})\b")
    # "hits the red ball": a mention of another object, not a new one
    hits = [m for m in pattern.finditer(text) if not text[: m.start()].endswith("the ")]
    breaks = [0]
    for a, b in zip(hits[:-1], hits[1:]):
        joins = list(_CLAUSE_BREAK.finditer(text, a.end(), b.start()))
        breaks.append(joins[-1].end() if joins else b.start())
    breaks.append(len(text))
    out = []
    for i, m in enumerate(hits):
        clause = text[breaks[i] : breaks[i + 1]]
        side = next((_SIDES[w] for w in re.findall(r"\b(left|right|middle|centre)\b", clause)), None)
        count = next((n for word, n in COUNTS.items() if re.search(rf"\b{word}\b", clause)), None)
        bouncing = re.search(r"\b(bounces|hops)\b", clause) is not None
        out.append(NamedObject(m.group(1), _SHAPES[m.group(2)], side, count, bouncing))
    unique: dict[str, NamedObject] = {}
    for obj in out:
        unique.setdefault(obj.colour, obj)
    return list(unique.values())


def reference_area(shape: str, height: int, width: int) -> float:
    r = REFERENCE_RADIUS * min(height, width)
    return math.pi * r * r if shape == "circle" else 4.0 * r * r


@dataclass
class ObjectTrack:
    """Per frame: whether the named object is shown, its centroid (NaN when not shown) and colour fraction."""

    shown: np.ndarray  # (T,) bool
    centers: np.ndarray  # (T, 2) x, y in pixels
    colour_fraction: np.ndarray  # (T,)
    reasons: list[str] = field(default_factory=list)  # per frame, why not shown ("" when shown)

    @property
    def shown_fraction(self) -> float:
        return float(self.shown.mean()) if self.shown.size else 0.0

    @property
    def mean_x(self) -> float:
        x = self.centers[self.shown, 0]
        return float(x.mean()) if x.size else float("nan")


def track_named_object(frames: np.ndarray, obj: NamedObject) -> ObjectTrack:
    """Follow the largest component of the object's colour in uint8 frames `(T, H, W, 3)`."""
    t, h, w, _ = frames.shape
    lo, hi = (f * reference_area(obj.shape, h, w) for f in AREA_RANGE)
    masks = colour_mask(frames, COLOURS[obj.colour], COLOUR_TOLERANCE)  # (T, H, W)
    shown = np.zeros(t, dtype=bool)
    centers = np.full((t, 2), np.nan)
    fraction = masks.mean(axis=(1, 2))
    reasons = []
    for k in range(t):
        labels, n = ndimage.label(masks[k])
        if n == 0:
            reasons.append("colour absent")
            continue
        sizes = np.bincount(labels.ravel())[1:]
        big = int(np.argmax(sizes)) + 1
        area = float(sizes[big - 1])
        ys, xs = np.nonzero(labels == big)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        why = ""
        if fraction[k] > MAX_COLOUR_FRACTION:
            why = f"{fraction[k]:.0%} of the frame is {obj.colour}"
        elif not lo <= area <= hi:
            why = f"component of {area:.0f} px (want {lo:.0f}-{hi:.0f})"
        elif area < 0.5 * box:
            why = "component not compact"
        elif (sizes >= 0.25 * area).sum() > 1:
            why = "several components"
        reasons.append(why)
        if not why:
            shown[k] = True
            centers[k] = (xs.mean() + 0.5, ys.mean() + 0.5)
    return ObjectTrack(shown, centers, fraction, reasons)


def floor_contacts(track: ObjectTrack, fps: float, min_speed: float = 0.3) -> np.ndarray:
    """Times (s) where the object's downward motion turns upward (image y grows downwards), sub-frame."""
    y = track.centers[:, 1]
    v = np.diff(y)
    moving = [i for i in range(len(v)) if np.isfinite(v[i]) and abs(v[i]) >= min_speed]
    t = np.arange(len(y)) / fps
    out = []
    pairs = [(a, b + 1) for a, b in zip(moving[:-1], moving[1:]) if v[a] > 0 > v[b] and np.isfinite(y[a : b + 2]).all()]
    for j, (before, after) in enumerate(pairs):
        lo = pairs[j - 1][1] if j else 0
        hi = pairs[j + 1][0] if j + 1 < len(pairs) else len(y) - 1
        while lo < before and not np.isfinite(y[lo : before + 1]).all():
            lo += 1
        while hi > after and not np.isfinite(y[after : hi + 1]).all():
            hi -= 1
        tc = _contact_time(t, y, before, after, lo, hi)
        out.append(tc if tc is not None else 0.5 * (t[before] + t[after]))
    return np.array(out)


def side_of(mean_x: float, width: int) -> dict[str, bool]:
    """For each side name: whether the mean x lies in its range (left < 0.4 W, right > 0.6 W, middle 0.3-0.7 W)."""
    u = mean_x / width
    return {side: lo <= u <= hi for side, (lo, hi) in SIDE_RANGES.items()}
