"""What writing a new audio track onto a video does with the video's own audio tracks (`avflow foley --audio` and the
other commands that write onto a user's video). A light module: the command line reads it to build its help."""

from __future__ import annotations

# policy -> what happens to the source's audio tracks
EXISTING_AUDIO = {
    "keep": "kept unchanged as further tracks after the new one (players start with the new one)",
    "replace": "dropped; the new track is the only one",
    "mix": "mixed into the new track (the first one only; the others are dropped)",
}
DEFAULT_EXISTING_AUDIO = "keep"  # nothing is lost


def describe(policy: str, source_tracks: int) -> str:
    """A phrase for the message that reports a written file, e.g. 'its audio track kept as track 2 (--audio keep)'."""
    if source_tracks == 0:
        return "the video had no audio"
    tracks = "its audio track" if source_tracks == 1 else f"its {source_tracks} audio tracks"
    if policy == "keep":
        where = "track 2" if source_tracks == 1 else f"tracks 2-{source_tracks + 1}"
        return f"{tracks} kept as {where} (--audio keep)"
    if policy == "mix":
        return f"{'its audio track' if source_tracks == 1 else 'its first audio track'} mixed in (--audio mix)"
    return f"{tracks} replaced (--audio replace)"
