"""A world clip mirrored left to right: frames and masks flipped along the width, the ears swapped, and every
horizontal fact of the ground truth mirrored ("left" and "right" swapped in the caption and the sides, x -> W - x,
azimuths negated).

The world has no left-right asymmetry (a background constant along the width, flat-coloured discs and squares,
walls at both sides, gravity downward, the default spherical head model), so the mirror of a world clip is the
clip of the mirrored scene: a second training example for every clip, with the opposite side word for the same
motion (the default model's object-side target, MODEL_CARD.md). The measured KEMAR HRIRs (`hrtf='kemar'`) are not
exactly symmetric; clips rendered with them mirror only approximately.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from avflow.world.dataset import WorldClip

MIRRORED_SIDE = {"left": "right", "right": "left", "middle": "middle"}
_SIDE_WORD = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def mirror_caption(caption: str) -> str:
    """'left' <-> 'right' as whole words (case kept for the first letter); the world's captions use no other
    horizontal words."""

    def swap(match: re.Match) -> str:
        word = MIRRORED_SIDE[match.group(1).lower()]
        return word.capitalize() if match.group(1)[0].isupper() else word

    return _SIDE_WORD.sub(swap, caption)


def mirror_meta(meta: dict) -> dict:
    """The ground truth of the mirrored clip (docs/conventions.md, "World clips"): pixel x -> W - x (pixel centres at
    i + 0.5, so flipping the columns maps x to W - x exactly), horizontal velocities and azimuths negated, sides and
    caption swapped."""
    width = meta["width"]
    objects = [
        {**o, "side": MIRRORED_SIDE[o["side"]], "position": [width - o["position"][0], o["position"][1]],
         "velocity": [-o["velocity"][0], o["velocity"][1]]}
        for o in meta["objects"]
    ]  # fmt: skip
    events = [
        {**e, "position": [width - e["position"][0], *e["position"][1:]], "azimuth": -e["azimuth"],
         **({"other_azimuth": -e["other_azimuth"]} if e.get("other_azimuth") is not None else {})}
        for e in meta["events"]
    ]
    trajectories = [[[round(width - x, 3), y] for x, y in track] for track in meta["trajectories"]]  # (K, T, 2)
    kept = {k: v for k, v in meta.items() if k != "mirrored"}  # mirroring twice gives the clip back
    return {**kept, "caption": mirror_caption(meta["caption"]), "objects": objects, "events": events,
            "trajectories": trajectories} | ({} if meta.get("mirrored") else {"mirrored": True})  # fmt: skip


def mirror_clip(clip: WorldClip) -> WorldClip:
    """The clip seen in a mirror: (T, H, W, 3) frames and (T, K, H, W) masks flipped along W, (2, N) [left, right]
    audio as [right, left], the ground truth mirrored."""
    return replace(
        clip,
        frames=np.ascontiguousarray(clip.frames[:, :, ::-1]),
        masks=np.ascontiguousarray(clip.masks[..., ::-1]),
        audio=np.ascontiguousarray(clip.audio[::-1]),
        meta=mirror_meta(clip.meta),
    )
