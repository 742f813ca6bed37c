"""read_image: every colour mode becomes HxWx3 uint8 RGB; broken files fail with one named line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from resvision.datasets.image_io import BadImageError, read_image
from resvision.errors import DataError

EXIF_ORIENTATION = 0x0112


def _check_rgb(array: np.ndarray, height: int, width: int) -> None:
    assert array.shape == (height, width, 3)
    assert array.dtype == np.uint8


def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    # Stored 16 (h) x 32 (w) with a red 8x8 block top-left; orientation 6 = display rotated 90 deg clockwise.
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif)

    out = read_image(path)

    _check_rgb(out, 32, 16)  # transposed shape
    # Clockwise rotation moves the top-left block to the top-right corner.
    assert out[4, 12, 0] > 200 and out[4, 12, 1] < 60
    assert out[4, 3].max() < 60


def test_grayscale_png(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 77], [200, 255]], np.uint8)).save(path)
    out = read_image(path)
    _check_rgb(out, 2, 2)
    assert out[1, 0].tolist() == [200, 200, 200]


def test_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[0, 1] = (255, 0, 0, 255)  # opaque red stays red
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey: 255 * 127 / 255 = 127
    path = tmp_path / "logo.png"
    Image.fromarray(rgba).save(path)
    out = read_image(path)
    _check_rgb(out, 2, 2)
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [255, 0, 0]
    assert out[1, 0].tolist() == [127, 127, 127]


def test_la_png_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.new("LA", (3, 3), (0, 0)).save(path)
    assert read_image(path)[1, 1].tolist() == [255, 255, 255]


def test_palette_png_with_and_without_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), 1)
    opaque, transparent = tmp_path / "p.png", tmp_path / "p_t.png"
    image.save(opaque)
    image.save(transparent, transparency=0)  # palette index 0 is transparent

    out = read_image(opaque)
    _check_rgb(out, 1, 2)
    assert out[0].tolist() == [[10, 20, 30], [200, 100, 50]]
    assert read_image(transparent)[0].tolist() == [[255, 255, 255], [200, 100, 50]]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    out = read_image(path)
    _check_rgb(out, 8, 8)
    assert np.abs(out[4, 4].astype(int) - [255, 0, 0]).max() < 10


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "depth16.png"
    Image.fromarray(np.array([[0, 256, 1000, 65535]], np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    out = read_image(path)
    _check_rgb(out, 1, 4)
    # >> 8: clipping (Pillow's convert("L")) would give 255 for 256 and 1000.
    assert out[0, :, 0].tolist() == [0, 1, 3, 255]


def test_16bit_rgb_png(tmp_path: Path) -> None:
    path = tmp_path / "rgb16.png"
    bgr = np.zeros((2, 2, 3), np.uint16)
    bgr[0, 0] = (0, 256, 65535)  # OpenCV writes BGR: this pixel is R=65535, G=256, B=0
    assert cv2.imwrite(str(path), bgr)
    out = read_image(path)
    _check_rgb(out, 2, 2)
    assert out[0, 0].tolist() == [255, 1, 0]


def test_one_bit_image(tmp_path: Path) -> None:
    image = Image.new("1", (3, 2), 0)
    image.putpixel((1, 1), 1)
    path = tmp_path / "bits.png"
    image.save(path)
    out = read_image(path)
    _check_rgb(out, 2, 3)
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("suffix,options", [(".bmp", {}), (".webp", {"lossless": True}), (".tiff", {})])
def test_other_formats_round_trip(tmp_path: Path, suffix: str, options: dict) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(pixels).save(path, **options)
    np.testing.assert_array_equal(read_image(path), pixels)


def _assert_one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message
    assert isinstance(error.value, DataError)


def test_truncated_jpeg_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError) as error:
        read_image(path)
    _assert_one_line_naming(error, path)
    assert "truncated" in str(error.value)


def test_random_bytes_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(BadImageError) as error:
        read_image(junk)
    _assert_one_line_naming(error, junk)

    missing = tmp_path / "nope.jpg"
    with pytest.raises(BadImageError) as error:
        read_image(missing)
    _assert_one_line_naming(error, missing)
