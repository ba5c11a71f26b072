"""Which files are videos, by suffix: the one list every folder scan and upload check reads (`avflow foley` over a
folder, `avflow eval`, the web UI's uploads, dataset tables), and which files a folder scan passes over. A light
module: the command line reads it to build its help."""

from __future__ import annotations

from pathlib import Path

# phones and cameras (.mp4 .mov .m4v .3gp), camcorders and broadcast (.mts .m2ts .ts .mpg .mpeg), the web (.webm
# .mkv .ogv .flv), older desktops (.avi .wmv); FFmpeg reads each whatever its suffix says
VIDEO_FILE_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mts", ".m2ts", ".ts", ".mpg", ".mpeg",
                       ".3gp", ".ogv", ".flv", ".wmv")  # fmt: skip
# sound files: lossless (.wav .flac .aif .aiff) and compressed (.mp3 .m4a .aac .ogg .opus), all read through FFmpeg
AUDIO_FILE_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".mp3", ".m4a", ".aac", ".ogg", ".opus")
# still images (what `avflow i2a` reads): FFmpeg opens one as a video of a single frame, which is not a clip
IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def hidden(path: Path, root: Path) -> bool:
    """Whether a folder scan passes over `path` (under `root`): it or a folder between them is hidden (a name
    starting with "."), as file browsers and `ls` do. macOS leaves a `._clip.mp4` beside every clip copied to a
    shared or external drive (its attributes, not a video), which a scan counted as a broken video."""
    return any(part.startswith(".") for part in Path(path).relative_to(root).parts)
