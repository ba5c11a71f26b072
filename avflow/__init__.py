"""avflow: synchronized audio-visual generation with flow matching."""

from pathlib import Path

__version__ = "0.1.0"


def assets_dir() -> Path:
    """The package's shipped files (weights, codecs, training recipes in `configs/`, experiments), installed or not."""
    return Path(__file__).resolve().parent / "assets"
