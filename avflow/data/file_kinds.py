"""Which files are videos, by suffix: the one list every folder scan and upload check reads (`avflow foley` over a
folder, `avflow eval`, the web UI's uploads, dataset tables). A light module: the command line reads it to build its
help."""

from __future__ import annotations

# phones and cameras (.mp4 .mov .m4v .3gp), camcorders and broadcast (.mts .m2ts .ts .mpg .mpeg), the web (.webm
# .mkv .ogv .flv), older desktops (.avi .wmv); FFmpeg reads each whatever its suffix says
VIDEO_FILE_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mts", ".m2ts", ".ts", ".mpg", ".mpeg",
                       ".3gp", ".ogv", ".flv", ".wmv")  # fmt: skip
