"""Media I/O: probe files, read video frames and audio, write audio and mp4s (PyAV + soundfile).

The code lives in `video.py` (probe, frames, windows), `audio.py` (read / write / resample) and `mux.py`
(h264 + AAC writing, remuxing a video with a new audio track); this module gathers the public API.
"""

from __future__ import annotations

from avflow.data.audio import read_audio, write_audio
from avflow.data.mux import mux_audio, write_video
from avflow.data.video import (
    MediaInfo,
    VideoFrames,
    iter_video_windows,
    probe,
    read_video,
    scaled_height,
    video_frames,
)

__all__ = [
    "MediaInfo",
    "VideoFrames",
    "iter_video_windows",
    "mux_audio",
    "probe",
    "read_audio",
    "read_video",
    "scaled_height",
    "video_frames",
    "write_audio",
    "write_video",
]
