"""Video reconstruction measures for codecs: PSNR per frame and per-object colour-mask agreement.

An object "is kept" when the reconstruction shows its colour where the ground truth shows the object: per object
and frame, the colour mask (pixels within Euclidean distance `COLOUR_TOLERANCE` in uint8 RGB of the object's
colour) of the reconstruction is compared with the ground-truth visibility mask by IoU and centroid distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avflow.eval.inputs import check_frames

COLOUR_TOLERANCE = 40.0  # uint8 RGB Euclidean distance
PSNR_CAP_DB = 100.0  # an exact frame's PSNR (infinite); a floor of 1e-10 on the MSE gave it 148 dB


def frame_psnr(reference: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """PSNR (dB, peak 255) of each frame of uint8 `(T, H, W, 3)` videos -> `(T,)`, at most `PSNR_CAP_DB` (an exact
    frame; a one-level error on every pixel reads 48.1 dB). A mean of these over frames is not the PSNR of the mean
    error: each exact frame counts 100 dB in it. The peak holds for uint8 only: float frames (in [-1, 1] a 25 %
    error would read as 54 dB) or two shapes are a one-line ValueError."""
    reference = check_frames(reference, "reference")
    reconstruction = check_frames(reconstruction, "reconstruction")
    if reference.shape != reconstruction.shape:
        raise ValueError(f"reference and reconstruction must have one shape, got {reference.shape} and "
                         f"{reconstruction.shape}")  # fmt: skip
    diff = reference.astype(np.float64) - reconstruction.astype(np.float64)
    mse = np.maximum(np.mean(diff * diff, axis=(1, 2, 3)), 255.0**2 * 10 ** (-PSNR_CAP_DB / 10))
    return np.minimum(10.0 * np.log10(255.0**2 / mse), PSNR_CAP_DB)


def colour_mask(frames: np.ndarray, rgb, tolerance: float = COLOUR_TOLERANCE) -> np.ndarray:
    """`(T, H, W)` bool: pixels within `tolerance` of `rgb` (uint8 RGB Euclidean distance)."""
    d = frames.astype(np.float32) - np.asarray(rgb, dtype=np.float32)
    return np.einsum("thwc,thwc->thw", d, d) <= tolerance**2


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()]) if xs.size else np.array([np.nan, np.nan])


@dataclass(frozen=True)
class ObjectScore:
    """One object in one frame where the ground truth shows at least one pixel of it."""

    colour: str
    shape: str
    frame: int
    iou: float
    centroid_error_px: float  # inf when the reconstruction shows none of the colour


def object_scores(frames: np.ndarray, masks: np.ndarray, objects: list[dict], min_pixels: int = 1) -> list[ObjectScore]:
    """Per object and frame: IoU of the reconstruction's colour mask vs the ground-truth mask, centroid error.

    `frames` `(T, H, W, 3)` uint8 reconstruction; `masks` `(T, K, H, W)` ground-truth visibility; `objects`: the
    world json's object records (`rgb`, `colour`, `shape`). Frames where an object shows fewer than `min_pixels`
    ground-truth pixels are skipped.
    """
    out = []
    for k, obj in enumerate(objects):
        pred = colour_mask(frames, obj["rgb"])  # (T, H, W)
        for t in range(frames.shape[0]):
            gt = masks[t, k]
            if gt.sum() < min_pixels:
                continue
            inter = np.logical_and(pred[t], gt).sum()
            union = np.logical_or(pred[t], gt).sum()
            err = float(np.linalg.norm(_centroid(pred[t]) - _centroid(gt))) if pred[t].any() else float("inf")
            out.append(ObjectScore(obj["colour"], obj["shape"], t, float(inter / union), err))
    return out


def boundary_psnr_gap(psnr: np.ndarray, stride: int = 4) -> float:
    """Mean PSNR of frames next to a latent-frame boundary minus that of the others (dB; 0 = no seam).

    Boundary frames are the last frame of each latent frame and the first of the next: `stride j - 1` and
    `stride j` for j >= 1. `psnr` is `(T,)` or `(clips, T)`.
    """
    psnr = np.atleast_2d(psnr)
    t = psnr.shape[1]
    boundary = np.zeros(t, dtype=bool)
    for j in range(stride, t, stride):
        boundary[j - 1] = boundary[j] = True
    if not boundary.any() or boundary.all():
        return float("nan")
    return float(psnr[:, boundary].mean() - psnr[:, ~boundary].mean())
