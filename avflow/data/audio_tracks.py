"""What writing a new audio track onto a video does with the video's own audio tracks (`avflow foley --audio` and the
other commands that write onto a user's video). A light module: the command line reads it to build its help."""

from __future__ import annotations

# policy -> what happens to the source's audio tracks
EXISTING_AUDIO = {
    "keep": "kept unchanged as further tracks after the new one (players start with the new one)",
    "replace": "dropped; the new track is the only one",
    "mix": "the first one mixed into the new track (which takes its language and title), at the higher of the two "
    "sample rates and over the longer of the two (past the video's end where its audio goes on); any others kept "
    "unchanged after it",
}
DEFAULT_EXISTING_AUDIO = "keep"  # nothing is lost
MIX_MAX_RATE = 48000  # "mix" sums at the higher of the two rates, up to this


def mix_rate(new_rate: int, source_rate: int) -> int:
    """The sample rate of "mix"'s sum: the higher of the new track's and the source's, at most MIX_MAX_RATE."""
    return max(new_rate, min(source_rate, MIX_MAX_RATE))


def describe(
    policy: str, source_tracks: int, left_out: list[str] | tuple[str, ...] = (), *, rates: tuple[int, int] | None = None
) -> str:
    """A phrase for the message that reports a written file, e.g. 'its audio track kept as track 2 (--audio keep)';
    `left_out`: streams the output could not hold (`avflow.data.mux.left_out`), said rather than dropped silently;
    `rates`: the new track's and the source's sample rates, for the rate a mix is written at."""
    dropped = f"; its {', '.join(left_out)} left out (the output's container cannot hold them)" if left_out else ""
    if source_tracks == 0:
        return "the video had no audio" + dropped
    tracks = "its audio track" if source_tracks == 1 else f"its {source_tracks} audio tracks"
    if policy == "keep":
        where = "track 2" if source_tracks == 1 else f"tracks 2-{source_tracks + 1}"
        return f"{tracks} kept as {where} (--audio keep)" + dropped
    if policy == "mix":
        first = "its audio track" if source_tracks == 1 else "its first audio track"
        at = f" at {mix_rate(*rates)} Hz" if rates else ""
        others = source_tracks - 1
        kept = "" if not others else (", its other audio track kept as track 2" if others == 1 else
                                      f", its {others} other audio tracks kept as tracks 2-{others + 1}")  # fmt: skip
        return f"{first} mixed in{at}{kept} (--audio mix)" + dropped
    return f"{tracks} replaced (--audio replace)" + dropped
