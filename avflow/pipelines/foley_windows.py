"""Window planning for long inputs, and the other settings of a foley run that are checked before any weights are
read (guidance, the default seed).

Windows (`plan_windows`): an input of T seconds longer than the window W is cut into the fewest windows of at most W
seconds, with starts on the audio-latent grid, that overlap by O seconds: n = ceil((T - O') / (W - O')), where W - O'
is W - O rounded down to the latent grid (so O' is O rounded up to it, by less than one latent). The starts are spread
evenly and the windows share the length (T + (n - 1) O) / n, each overlapping the next by exactly O; so the work grows
with T by O per extra window, not by a whole window, and no window repeats its neighbour.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from avflow.errors import ConfigError

MIN_MODEL_S = 0.64  # shortest clip the network takes (one 16-frame Synchformer segment); shorter clips are padded
TRAINED_S = 8.0  # the clip length the official MMAudio models were trained on
LONG_WINDOW_S = 2 * TRAINED_S  # a longer --window gets a note: quality degrades on long contexts (MMAudio issue #32)
DEFAULT_SEED = 42  # the sampling seed of the foley commands and of the Python API (FoleyPipeline, FoleyModel)
EPS = 1e-6


@dataclass(frozen=True, kw_only=True)
class Window:
    """One generation window: starts at latent frame `start` (global grid), lasts `duration` seconds."""

    index: int
    start: int  # latent frames from the video start
    start_s: float
    duration: float  # seconds the window's video features and audio cover (>= MIN_MODEL_S)


def check_windows(window_s: float, overlap_s: float, *, window: str = "--window", overlap: str = "--overlap") -> None:
    """A one-line ConfigError unless window and overlap are finite, window >= MIN_MODEL_S and 0 <= overlap < window / 2.
    (An infinite window would put a whole input, however long, into one window: memory without bound.) `window`,
    `overlap`: the names the values were given under, said with them (the command line's options by default; the
    Python API's `window_s`, `overlap_s` in `plan_windows`)."""
    got = _given(window, window_s, overlap, overlap_s)
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (window_s, overlap_s)):
        raise ConfigError(f"window and overlap must be numbers of seconds, got {got}")
    if not (math.isfinite(window_s) and math.isfinite(overlap_s)):
        raise ConfigError(f"window and overlap must be finite seconds, got {got} (a window's frames, features and "
                          "latents are held in memory at once)")  # fmt: skip
    if not window_s >= MIN_MODEL_S or not 0 <= overlap_s < window_s / 2:
        raise ConfigError(f"need window >= {MIN_MODEL_S} s and 0 <= overlap < window / 2, got {got}")


def _given(window: str, window_s, overlap: str, overlap_s) -> str:
    """The values as given: `--window 2 --overlap 1` for options, `window_s 2, overlap_s 1` for arguments."""
    sep = " " if window.startswith("-") else ", "
    return f"{window} {_said(window_s)}{sep}{overlap} {_said(overlap_s)}"


def _said(value) -> str:
    return f"{float(value):g}" if isinstance(value, numbers.Real) and not isinstance(value, bool) else repr(value)


def window_note(window_s: float) -> str | None:
    """A one-line note for a window much longer than the models' training length, else None."""
    if window_s <= LONG_WINDOW_S:
        return None
    return (
        f"--window {window_s:g} s is much longer than the {TRAINED_S:g} s clips MMAudio's models learnt from: "
        "quality degrades on long contexts (MMAudio issue #32), and a window's memory grows with it"
    )


def check_guidance(
    cfg_strength: float, negative_prompt: str | None, *, cfg: str = "cfg_strength", negative: str = "negative_prompt"
) -> None:
    """One-line ConfigErrors for guidance settings that would not do what they say (names: `cfg`, `negative`, e.g.
    the command line's --cfg and --negative-prompt).

    A negative prompt works through guidance, v = v_c + (w - 1)(v_c - v_neg): at w = 1 that branch drops out, so a
    negative prompt needs w > 1. Below 1 the same formula leans towards the negative branch, whereas MMAudio's
    reference runs the conditional branch alone for any cfg_strength < 1 (its `ode_wrapper`): rather than silently
    differ from it, or silently treat 0.5 as 1, a strength below 1 is refused and w = 1 named, which runs unguided."""
    if negative_prompt is not None and cfg_strength <= 1:
        raise ConfigError(f"{negative} needs guidance: {cfg} > 1 (got {cfg_strength:g}; at {cfg} 1 only the prompt's "
                          "branch runs and the negative one would be ignored)")  # fmt: skip
    if cfg_strength < 1:
        raise ConfigError(f"{cfg} {cfg_strength:g} < 1: MMAudio runs unguided there (the conditional branch alone), "
                          f"which {cfg} 1 does; give {cfg} 1, or > 1 for guidance")  # fmt: skip


def plan_windows(total_s: float, window_s: float, overlap_s: float, latent_rate: float) -> list[Window]:
    """Windows covering [0, total_s) exactly, each at most `window_s` long, consecutive ones overlapping by exactly
    `overlap_s`, starts on the latent grid (`latent_rate` latents a second); see the module's docstring.

    n = 1 + ceil(first / stride) windows, where `stride` (latents) is the longest start-to-start step that keeps the
    overlap with windows of at most `window_s`, and `first` the earliest start of a last window of at most `window_s`:
    the fewest that can cover. Their starts are spread evenly, and each window but the last lasts `overlap_s` past
    its successor's start; the last ends at `total_s` and lasts about as long as the others."""
    check_windows(window_s, overlap_s, window="window_s", overlap="overlap_s")
    if total_s <= window_s + EPS:
        return [Window(index=0, start=0, start_s=0.0, duration=max(total_s, MIN_MODEL_S))]
    r = latent_rate
    stride = max(1, math.floor((window_s - overlap_s) * r + EPS))  # latents between starts, at most
    first = math.ceil((total_s - window_s) * r - EPS)  # the last window starts here or later (it lasts <= window_s)
    n = 1 + math.ceil(first / stride)
    # the last start that gives every window the same length, (total + (n - 1) overlap) / n, kept feasible
    last = min(max(round((n - 1) * (total_s - overlap_s) * r / n), first), (n - 1) * stride)
    starts = [(i * last + (n - 1) // 2) // (n - 1) for i in range(n)]  # steps of floor or ceil(last / (n - 1))
    ends = [overlap_s + m / r for m in starts[1:]] + [total_s]
    return [
        Window(index=i, start=m, start_s=m / r, duration=max(end - m / r, MIN_MODEL_S))
        for i, (m, end) in enumerate(zip(starts, ends))
    ]
