"""Reading still images (PIL) as RGB pixels, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avflow.errors import MediaError


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file (png, jpg, ...), else a one-line MediaError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise MediaError(f"{path}: cannot read as an image ({type(exc).__name__})") from None
