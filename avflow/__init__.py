"""avflow: synchronized audio-visual generation with flow matching."""

__version__ = "0.1.0"
