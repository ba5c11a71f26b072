"""What writing a new audio track onto a video does with the video's own audio tracks (`avflow foley --audio` and the
other commands that write onto a user's video). A light module: the command line reads it to build its help."""

from __future__ import annotations

# policy -> what happens to the source's audio tracks
EXISTING_AUDIO = {
    "keep": "kept unchanged as further tracks after the new one (players start with the new one)",
    "replace": "dropped; the new track is the only one",
    "mix": "mixed into the new track, at the higher of the two sample rates and over the longer of the two (the "
    "first one only; the others are dropped)",
}
DEFAULT_EXISTING_AUDIO = "keep"  # nothing is lost


def describe(policy: str, source_tracks: int, left_out: list[str] | tuple[str, ...] = ()) -> str:
    """A phrase for the message that reports a written file, e.g. 'its audio track kept as track 2 (--audio keep)';
    `left_out`: streams the output could not hold (`avflow.data.mux.left_out`), said rather than dropped silently."""
    dropped = f"; its {', '.join(left_out)} left out (the output's container cannot hold them)" if left_out else ""
    if source_tracks == 0:
        return "the video had no audio" + dropped
    tracks = "its audio track" if source_tracks == 1 else f"its {source_tracks} audio tracks"
    if policy == "keep":
        where = "track 2" if source_tracks == 1 else f"tracks 2-{source_tracks + 1}"
        return f"{tracks} kept as {where} (--audio keep)" + dropped
    if policy == "mix":
        first = "its audio track" if source_tracks == 1 else "its first audio track"
        return f"{first} mixed in (--audio mix)" + dropped
    return f"{tracks} replaced (--audio replace)" + dropped
