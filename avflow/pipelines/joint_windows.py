"""Windows for joint generation longer than the model's training length, and the crossfade that joins their media.

Windows are planned on the video latent grid (a latent frame is `video_temporal_stride` pixel frames; the audio
latents of the same span go with it). Window k covers latent frames [start_k, start_k + window). Each window after
the first starts `window - overlap` frames after the one before, so its first `overlap` frames are latents already
generated (or given), passed to the model as clean conditions at t = 1 per frame: the continuation task. The first
window starts `overlap` frames before the first frame to generate (context from a given clip) and the last one is
moved back to end with the clip, so every window has the trained length when the clip is long enough.
Each window is decoded on its own; `crossfade_into` joins consecutive decoded pieces (never blending into what the
user gave: a clip to continue comes out as it was read).
"""

from __future__ import annotations

import torch
from torch import Tensor

from avflow.errors import ConfigError


def plan_windows(total: int, window: int, overlap: int, first_unknown: int = 0) -> list[int]:
    """Start latent frames of the windows that generate latent frames [first_unknown, total) of a `total`-frame clip
    (none when everything is known)."""
    if not 0 <= overlap < window:
        raise ConfigError(f"windows need 0 <= overlap < window latent frames, got {overlap} and {window}")
    if first_unknown >= total:
        return []
    start, starts = max(0, first_unknown - overlap), []
    while start + window < total:
        starts.append(start)
        start += window - overlap
    starts.append(max(0, total - window))  # > starts[-1], since starts[-1] + window < total
    return starts


def crossfade_into(out: Tensor, filled: int, start: int, piece: Tensor, fade: int, keep: int = 0) -> int:
    """Write `piece` into `out` at `start` (time along dim 0; whatever runs past `out` is dropped) and return the new
    end of what `out` holds. Where the piece overlaps media already there (before `filled`), the earlier media stay
    until the last `fade` items of the overlap, across which the two blend linearly (weights excluding 0 and 1).
    The first `keep` items (the user's own media) are never blended: a piece joins them with a cut."""
    end = min(start + piece.shape[0], out.shape[0])
    overlap = max(0, min(filled, end) - start)
    n = max(0, min(fade, overlap, start + overlap - keep))
    at = start + overlap - n
    if n:
        w = (torch.arange(1, n + 1, dtype=out.dtype, device=out.device) / (n + 1)).view(-1, *[1] * (out.ndim - 1))
        out[at : at + n] = (1 - w) * out[at : at + n] + w * piece[at - start : at - start + n].to(out.dtype)
    out[start + overlap : end] = piece[overlap : end - start].to(out.dtype)
    return max(filled, end)
