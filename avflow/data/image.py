"""Reading still images (PIL) as the RGB pixels a viewer shows, with one-line errors.

A viewer, not the stored samples: the EXIF orientation is applied, 16-bit / 32-bit / float samples are scaled to 8
bits, transparent pixels are composited onto white, and a very large image is decoded at an integer fraction of its
size. Its one consumer, CLIP in `avflow i2a` (`FoleyPipeline.generate_image`), squashes every image to 384x384
(`avflow.encoders.preprocess.CLIP_SIZE`), so a 100-megapixel photo decoded in full is seconds and gigabytes for nothing.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avflow.errors import MediaError, MediaWarning

if TYPE_CHECKING:
    from PIL import Image as PILImage

# An image whose long side exceeds MAX_SIDE is decoded reduced by an integer factor (JPEG at 1/2, 1/4 or 1/8 while
# decoding, then box averaging). 8192 is above every phone camera up to 50 MP (8160 x 6120) and most system cameras,
# so ordinary photos read exactly as before; it is 21x the 384 px CLIP needs.
MAX_SIDE = 8192
MIN_SIDE = 2 * 384  # no reduction takes a side below twice CLIP's 384 (CLIP squashes each axis on its own)
MAX_PIXELS = 1 << 30  # larger images are refused: decoding 1 gigapixel of PNG already takes 3 to 4 GB
_PILLOW_LIMIT = threading.Lock()  # one reader at a time lifts Pillow's (process-wide) pixel limit


def reduction(width: int, height: int) -> int:
    """Integer factor to decode a width x height image at: long side <= MAX_SIDE, no side taken below MIN_SIDE."""
    wanted = -(-max(width, height) // MAX_SIDE)
    return max(1, min(wanted, min(width, height) // MIN_SIDE))


@contextmanager
def _pillow_pixel_limit_lifted() -> Iterator[None]:
    """Lift Pillow's decompression-bomb limit (179 MP, an error; a warning above 89 MP) for one read and restore it.

    avflow checks MAX_PIXELS itself and decodes large images reduced; other code keeps Pillow's setting. The limit is a
    module global, so the lock keeps two readers from restoring each other's value."""
    from PIL import Image

    with _PILLOW_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@contextmanager
def _open(path: Path) -> Iterator[PILImage.Image]:
    """The opened image (header read, nothing decoded), else a one-line MediaError, also for errors while decoding."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise MediaError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    try:
        with _pillow_pixel_limit_lifted(), Image.open(path) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise MediaError(f"{path}: a {width}x{height} image, more than the {MAX_PIXELS >> 30} gigapixel "
                                 "avflow reads")  # fmt: skip
            yield img
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"{path}: cannot read as an image ({type(exc).__name__})") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from an image file's header, decoding nothing: a cheap check before any weights are loaded."""
    path = Path(path)
    with _open(path) as img:
        return img.size


def to_8bit(img: PILImage.Image) -> tuple[PILImage.Image, str | None]:
    """8-bit samples for 16-bit, 32-bit integer and float greyscale (Pillow's I;16*, I and F; `convert` clips those
    at 255, so a 16-bit image turns white), and a note when samples fall outside the range assumed. Other modes as
    they are.

    Ranges: I;16* is 0..65535, kept as its high byte (v >> 8), as Pillow reads 16-bit RGB PNGs, so a 16-bit grey
    and a 16-bit colour file agree; I is taken as 0..65535 too, since Pillow's I images come from 16-bit sources (PGM,
    TIFF, older PNG readers) far more often than from full-range 32-bit data; F is 0..1, the float image convention
    (scikit-image, OpenEXR, TIFF from numpy). Values outside are clipped."""
    from PIL import Image

    if not (img.mode.startswith("I") or img.mode == "F"):
        return img, None
    samples = np.asarray(img)
    if img.mode == "F":
        low, high = 0.0, 1.0
        eight = np.nan_to_num(samples * 255.0, nan=0.0).clip(0, 255).round()
    else:
        low, high = 0, 65535
        eight = samples.astype(np.int32, copy=False).clip(0, 65535) >> 8
    note = None
    if samples.size and (np.nanmin(samples) < low or np.nanmax(samples) > high):
        seen = f"{np.nanmin(samples):g}..{np.nanmax(samples):g}"
        note = f"{img.mode} samples {seen} clipped to the {low:g}..{high:g} taken as black..white"
    grey = Image.fromarray(eight.astype(np.uint8), "L")
    transparent = img.info.get("transparency")  # one sample value (a PNG tRNS chunk), in the source's units
    if isinstance(transparent, int):
        alpha = Image.fromarray(np.where(samples == transparent, 0, 255).astype(np.uint8), "L")
        grey = Image.merge("LA", (grey, alpha))
    return grey, note


def on_white(img: PILImage.Image) -> tuple[PILImage.Image, bool]:
    """RGB of an 8-bit image with any transparency (alpha, palette alpha, a transparent colour) composited onto
    white, as a viewer's page shows it (the stored colour of transparent pixels is arbitrary, often black); and
    whether any pixel was less than opaque."""
    from PIL import Image

    if not img.has_transparency_data:
        return (img if img.mode == "RGB" else img.convert("RGB")), False
    rgba = img.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:
        return rgba.convert("RGB"), False
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB"), True


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file (png, jpg, ...) as a viewer shows them, else a one-line MediaError.

    The EXIF orientation is applied; transparent pixels are composited onto white; 16-bit, 32-bit and float samples
    are scaled to 8 bits (`to_8bit`); an image whose long side is above MAX_SIDE is decoded reduced by the integer
    factor `reduction` gives, so H and W are then smaller than the file's. Notes (MediaWarning) say what was assumed."""
    from PIL import ImageOps

    path = Path(path)
    with _open(path) as img:
        factor = reduction(*img.size)
        if factor > 1 and img.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 by DCT scaling, at least the reduced size
            img.draft("RGB", (-(-img.width // factor), -(-img.height // factor)))
            factor = reduction(*img.size)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        eight, note = to_8bit(img)
        if factor > 1:  # box averaging (alpha-weighted), before the copies that compositing makes
            if eight.has_transparency_data and eight.mode not in ("LA", "RGBA"):  # a palette or transparent colour
                eight = eight.convert("RGBA")
            elif eight.mode not in ("L", "LA", "RGB", "RGBA"):
                eight = eight.convert("RGB")
            eight = eight.reduce(factor)
        rgb, transparent = on_white(eight)
        pixels = np.asarray(rgb)
    for text in (note, "transparent pixels read as on white" if transparent else None):
        if text:
            warnings.warn(MediaWarning(f"{path}: {text}"), stacklevel=2)
    return pixels
