"""Still images as a viewer shows them (`avflow/data/image.py`, read by `avflow i2a`): EXIF orientation, 16-bit /
32-bit / float greyscale, transparency onto white, large images decoded reduced (and once), ordinary images unchanged.

Test images are made in tmp_path; the large-image tests lower the size limits instead of writing large files."""

from __future__ import annotations

import argparse
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from avflow.data import image as image_module
from avflow.data.image import read_image
from avflow.errors import MediaError, MediaWarning


def _pillow_rgb(path: Path) -> np.ndarray:
    """What `read_image` returned before: the stored pixels, `convert("RGB")`."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _png(path: Path, width: int, height: int, depth: int, colour: int, rows: bytes) -> Path:
    """A PNG written chunk by chunk (Pillow writes neither 16-bit RGB nor a header alone)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# -- 1. EXIF orientation ----------------------------------------------------------------------------------------------


def _marked(mode: str = "RGB") -> Image.Image:
    """60 wide x 40 high, grey with a red 10x10 block at the stored top-left."""
    pixels = np.full((40, 60, 3), 128, np.uint8)
    pixels[:10, :10] = (255, 0, 0)
    img = Image.fromarray(pixels)
    return img.quantize(4) if mode == "P" else img


@pytest.mark.parametrize("suffix, mode", [(".jpg", "RGB"), (".png", "P"), (".webp", "RGB")])
@pytest.mark.parametrize("orientation, corner", [(6, (0, -1)), (8, (-1, 0)), (3, (-1, -1)), (1, (0, 0))])
def test_exif_orientation_is_applied(tmp_path, suffix, mode, orientation, corner):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo{suffix}"
    _marked(mode).save(path, exif=exif.tobytes(), **({"quality": 95} if suffix == ".jpg" else {}))
    pixels = read_image(path)
    assert pixels.shape == ((60, 40, 3) if orientation in (6, 8) else (40, 60, 3))
    row, col = corner  # where the stored top-left shows: 6 turns clockwise (top-right), 8 anticlockwise (bottom-left)
    red = pixels[row * 5 + (2 if row == 0 else -3), col * 5 + (2 if col == 0 else -3)]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60, red
    with Image.open(path) as img:  # and exactly Pillow's exif_transpose
        np.testing.assert_array_equal(pixels, np.asarray(ImageOps.exif_transpose(img).convert("RGB")))


# -- 2. 16-bit, 32-bit and float greyscale ----------------------------------------------------------------------------


RAMP = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, ..., 65535: exactly 0..255 in 8 bits


@pytest.mark.parametrize("suffix, dtype", [(".png", "<u2"), (".tif", "<u2"), (".tif", ">u2")])
def test_16bit_grey_is_scaled_not_clipped(tmp_path, suffix, dtype):
    path = tmp_path / f"grey16{suffix}"
    Image.fromarray(RAMP.astype(dtype)).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I;16")
    pixels = read_image(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (16, 16, 3)
    expected = (RAMP >> 8).astype(np.uint8)
    assert (expected == np.arange(256).reshape(16, 16)).all()
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)


def test_32bit_int_and_float_grey_use_their_stated_ranges(tmp_path):
    Image.fromarray(RAMP.astype(np.int32)).save(tmp_path / "i.tif")  # I: taken as 0..65535
    np.testing.assert_array_equal(read_image(tmp_path / "i.tif")[..., 0], RAMP >> 8)
    levels = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(levels).save(tmp_path / "f.tif")  # F: taken as 0..1
    with Image.open(tmp_path / "f.tif") as img:
        assert img.mode == "F"
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif")[..., 1], np.arange(256).reshape(16, 16))
    Image.fromarray(levels * 200).save(tmp_path / "f200.tif")  # out of range: clipped, with a note
    with pytest.warns(MediaWarning, match=r"f200.tif: F samples 0..200 clipped to the 0..1"):
        pixels = read_image(tmp_path / "f200.tif")
    assert pixels[0, 0, 0] == 0 and (pixels[0, 2:] == 255).all()


def test_16bit_grey_with_a_transparent_value(tmp_path):
    rows = b"".join(b"\x00" + RAMP[r].astype(">u2").tobytes() for r in range(16))
    path = _png(tmp_path / "t16.png", 16, 16, 16, 0, rows)
    data = path.read_bytes()  # a tRNS chunk before IDAT: sample 257 is transparent
    trns = struct.pack(">I", 2) + b"tRNS" + struct.pack(">H", 257) + struct.pack(">I", zlib.crc32(b"tRNS\x01\x01"))
    at = data.index(b"IDAT") - 4
    path.write_bytes(data[:at] + trns + data[at:])
    with pytest.warns(MediaWarning, match="transparent"):
        pixels = read_image(path)
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[0, 1].tolist() == [255, 255, 255]
    assert pixels[0, 2].tolist() == [2, 2, 2]


def test_16bit_rgb_png_still_reads_as_its_high_bytes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 65536, (12, 20, 3), dtype=np.uint16)
    rows = b"".join(b"\x00" + rgb[r].astype(">u2").tobytes() for r in range(12))
    path = _png(tmp_path / "rgb48.png", 20, 12, 16, 2, rows)
    np.testing.assert_array_equal(read_image(path), (rgb >> 8).astype(np.uint8))
    np.testing.assert_array_equal(read_image(path), _pillow_rgb(path))


# -- 3. Large images: decoded reduced, once, without touching Pillow's limit -----------------------------------------


ORDINARY_MAX_SIDE = 8192  # image.MAX_SIDE: a longer side is decoded reduced


def test_reduction_keeps_ordinary_photos_and_what_clip_needs():
    from avflow.encoders.preprocess import CLIP_SIZE

    reduction, max_side, min_side = image_module.reduction, image_module.MAX_SIDE, image_module.MIN_SIDE
    assert max_side == ORDINARY_MAX_SIDE and min_side >= 2 * CLIP_SIZE and max_side >= min_side
    assert reduction(8160, 6120) == reduction(6120, 8160) == 1  # a 50 MP phone photo: as stored
    assert reduction(max_side, max_side) == 1 and reduction(max_side + 1, 5000) == 2
    assert reduction(12000, 8000) == 2 and reduction(40000, 30000) == 5
    assert reduction(100_000, 1000) == 1  # a panorama's short side stays >= MIN_SIDE
    assert reduction(50_000, 2000) == 2


@pytest.fixture
def small_limits(monkeypatch):
    """Pillow's bomb limit at 1000 pixels (error above 2000) and MAX_SIDE 64: a 200x100 image is "huge"."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    monkeypatch.setattr(image_module, "MAX_SIDE", 64, raising=False)  # raising: the tests run before the fix too
    monkeypatch.setattr(image_module, "MIN_SIDE", 8, raising=False)


def test_a_large_png_is_decoded_reduced_without_a_bomb_error(tmp_path, small_limits):
    pixels = np.random.default_rng(1).integers(0, 256, (100, 200, 3), dtype=np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(pixels).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        assert image_module.image_size(path) == (200, 100)
        got = read_image(path)
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's setting restored for other code
    assert got.shape == (25, 50, 3)  # factor 4: long side 200 -> 50 <= 64
    np.testing.assert_array_equal(got, np.asarray(Image.fromarray(pixels).reduce(4)))
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)  # still refused to other code


def test_a_large_jpeg_is_decoded_at_reduced_scale(tmp_path, small_limits):
    y, x = np.mgrid[0:120, 0:240]
    pixels = np.stack([x, y * 2, (x + y) // 2], axis=-1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    got = read_image(path)
    assert got.shape == (30, 60, 3)  # DCT scaling by 1/4 when decoding (JPEG's draft mode), nothing after
    expected = np.asarray(Image.fromarray(pixels).reduce(4)).astype(int)
    assert np.abs(got.astype(int) - expected).mean() < 3
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_a_large_transparent_palette_image_is_reduced_then_put_on_white(tmp_path, small_limits):
    img = Image.new("P", (200, 100), 0)
    img.putpalette([0, 0, 0, 255, 0, 0])
    img.paste(1, (0, 0, 100, 100))
    path = tmp_path / "big_p.png"
    img.save(path, transparency=0)  # left half red, right half transparent black
    with pytest.warns(MediaWarning, match="transparent"):
        got = read_image(path)
    assert got.shape == (25, 50, 3)
    assert got[:, :25].tolist() == [[[255, 0, 0]] * 25] * 25 and (got[:, 25:] == 255).all()
    grey = np.zeros((100, 200), np.uint8)  # a transparent colour (tRNS): black; averages must not become it
    grey[:, :100] = np.tile([0, 4], 50)  # 0, 4, 0, 4, ...: half transparent, not an opaque 2 once averaged
    Image.fromarray(grey).save(tmp_path / "big_l.png", transparency=0)
    with pytest.warns(MediaWarning, match="transparent"):
        got = read_image(tmp_path / "big_l.png")
    assert np.isin(got[:, :25], (129, 130)).all() and (got[:, 25:] == 255).all()  # 4 half over white: 129.5


def test_a_gigapixel_header_is_a_one_line_error_before_decoding(tmp_path):
    side = 40_000  # 1.6 gigapixels claimed by a 100-byte file
    assert side * side > 1 << 30
    path = _png(tmp_path / "bomb.png", side, side, 8, 0, b"\x00" * 10)
    for read in (read_image, getattr(image_module, "image_size", read_image)):
        with pytest.raises(MediaError, match=r"bomb.png: a 40000x40000 image, more than the 1 gigapixel avflow reads"):
            read(path)
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3


def test_i2a_checks_the_header_only_before_the_weights(tmp_path, monkeypatch):
    from avflow.commands import i2a

    path = tmp_path / "photo.png"
    Image.new("RGB", (30, 20), (1, 2, 3)).save(path)

    class Checked(Exception):
        pass

    def decoded(*_):
        raise AssertionError("i2a decoded the image before generating")

    def next_check(*_, **__):
        raise Checked

    monkeypatch.setattr(image_module, "read_image", decoded)
    monkeypatch.setattr(i2a, "check_prompt", next_check)  # the check after the image's: stop there
    with pytest.raises(Checked):
        i2a.run(argparse.Namespace(image=path, prompt=None, negative_prompt=None))
    truncated = tmp_path / "truncated.png"
    data = path.read_bytes()
    truncated.write_bytes(data[: data.index(b"IDAT") + 6])  # a header, no pixels: its check passes, reading fails
    assert image_module.image_size(truncated) == (30, 20)
    with pytest.raises(MediaError, match="truncated.png: cannot read as an image"):
        read_image(truncated)


# -- 4. Transparency onto white ---------------------------------------------------------------------------------------


def test_transparent_pixels_are_composited_onto_white(tmp_path):
    rgba = np.zeros((8, 12, 4), np.uint8)  # transparent black ...
    rgba[:, :4] = (200, 10, 10, 255)  # ... an opaque red stripe ...
    rgba[:, 4:8] = (0, 0, 200, 128)  # ... and a half-transparent blue one
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    with pytest.warns(MediaWarning, match=r"rgba.png: transparent pixels read as on white"):
        pixels = read_image(tmp_path / "rgba.png")
    assert (pixels[:, :4] == (200, 10, 10)).all()
    assert (pixels[:, 4:8] == (127, 127, 227)).all()  # 0.5 blue + 0.5 white
    assert (pixels[:, 8:] == 255).all()

    la = np.zeros((8, 12, 2), np.uint8)
    la[:, :6] = (50, 255)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    with pytest.warns(MediaWarning):
        pixels = read_image(tmp_path / "la.png")
    assert (pixels[:, :6] == 50).all() and (pixels[:, 6:] == 255).all()

    rgb = np.zeros((8, 12, 3), np.uint8)  # an RGB PNG whose black is the transparent colour (tRNS)
    rgb[:, :6] = (9, 99, 199)
    Image.fromarray(rgb).save(tmp_path / "trns.png", transparency=(0, 0, 0))
    with pytest.warns(MediaWarning):
        pixels = read_image(tmp_path / "trns.png")
    assert (pixels[:, :6] == (9, 99, 199)).all() and (pixels[:, 6:] == 255).all()


def test_an_opaque_alpha_channel_changes_nothing(tmp_path):
    rgba = np.random.default_rng(2).integers(0, 256, (8, 12, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_image(tmp_path / "opaque.png"), rgba[..., :3])


# -- ordinary images: exactly as before -------------------------------------------------------------------------------


def test_ordinary_images_read_exactly_as_before(tmp_path):
    y, x = np.mgrid[0:3024, 0:4032]  # a 12 MP phone-sized JPEG, no EXIF turn
    photo = np.stack([x % 256, y % 256, (x // 16 + y // 16) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "phone.jpg", quality=90)
    small = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(small).save(tmp_path / "rgb.png")
    Image.fromarray(small[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(small).quantize(16).save(tmp_path / "palette.png")
    Image.fromarray(small).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(small[..., 0] > 128).save(tmp_path / "bw.png")
    Image.new("RGB", (ORDINARY_MAX_SIDE, 16), (10, 20, 30)).save(tmp_path / "wide.png")  # at the reduction threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("phone.jpg", "rgb.png", "grey.png", "palette.png", "cmyk.jpg", "bw.png", "wide.png"):
            got = read_image(tmp_path / name)
            assert got.dtype == np.uint8, name
            np.testing.assert_array_equal(got, _pillow_rgb(tmp_path / name), err_msg=name)
