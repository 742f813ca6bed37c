"""Decode any image file a user is likely to have into one array layout: ``HxWx3`` uint8 RGB.

Every dataset adapter reads pixels through :func:`read_image`, so colour-mode handling, EXIF
orientation and corrupt-file detection are decided once, here.

Mode rules (Pillow mode -> RGB):

* ``RGB``, ``L``, ``1``, ``P`` (opaque), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's own conversion.
* Anything with alpha (``RGBA``, ``LA``, ``PA``, ``P`` / ``L`` / ``RGB`` with a ``transparency`` entry):
  composited over **white**, because transparent pixels in logos, icons and product shots are meant
  to show the page behind them, which is white far more often than black (dropping alpha would expose
  whatever colour the encoder left in fully transparent pixels, often black).
* 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, and ``I`` as older Pillows open 16-bit PNGs): scaled to
  8 bits with ``>> 8``. Pillow's own ``convert("L")`` *clips* at 255, which turns almost every
  16-bit pixel white.
* 16-bit RGB PNGs: Pillow already decodes these to 8-bit ``RGB`` by keeping the high byte (``>> 8``).
* ``F`` (32-bit float, e.g. scientific TIFFs): Pillow's conversion, i.e. values clipped to 0..255.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from resvision.errors import DataError

__all__ = ["BadImageError", "as_rgb", "decoded", "image_label", "read_image"]

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_GREY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


class BadImageError(DataError):
    """An image file that is missing or cannot be fully decoded (the message names the file)."""


@contextlib.contextmanager
def decoded(path: str | Path, what: str = "image", error: type[DataError] = BadImageError) -> Iterator[Image.Image]:
    """``with decoded(path) as image:`` a PIL image with every byte decoded (truncation fails here).

    Every way a file can fail to decode becomes one ``error`` line naming the file (the one place
    that maps PIL's many exception types; image and mask readers share it).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            yield image
    except DataError:
        raise  # the caller's own one-line error from inside the block
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not a {what} file") from None
    except Image.UnidentifiedImageError:
        raise error(f"{path}: not an image file (unknown or corrupt format), cannot read the {what}") from None
    except Exception as exc:  # noqa: BLE001 - corrupt files raise OSError, SyntaxError, ValueError, struct.error...
        raise error(f"{path}: cannot decode the {what} ({one_line(exc)})") from exc


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB pixels, upright as its EXIF orientation says.

    The whole file is decoded (not just the header), so truncated files fail here rather than
    as a black stripe inside a batch. This relies on ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``
    staying ``False`` (Pillow's default); resvision never sets it.

    Args:
        path: Any format Pillow decodes (JPEG, PNG, BMP, WebP, TIFF, GIF (first frame), ...).

    Returns:
        ``(H, W, 3)`` uint8 array, RGB order, C-contiguous.

    Raises:
        BadImageError: The file is missing, is not an image, or is truncated / corrupt.
            The message is one line: ``<path>: <reason>``.
    """
    with decoded(path) as image:
        return to_rgb_array(ImageOps.exif_transpose(image))


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as :func:`read_image` returns it (EXIF orientations 5-8 swap the sides); header only."""
    with Image.open(path) as image:
        width, height = image.size
        with contextlib.suppress(Exception):
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
    return width, height


def as_rgb(image: object) -> np.ndarray:
    """An image held any way a user holds one, as the ``(H, W, 3)`` uint8 RGB array :func:`read_image` gives.

    Args:
        image: a file path (:func:`read_image`); a PIL image (upright by its EXIF orientation, any mode converted as
            a file of that mode is); a numpy array ``(H, W)`` grey or ``(H, W, 3 | 4)`` RGB / RGBA, uint8 or uint16;
            or a torch tensor ``(3, H, W)`` (torchvision's layout), float in [0, 1] or uint8.

    Raises:
        BadImageError: a type, layout, dtype or value range that is none of these, in one line naming what was given.
    """
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return to_rgb_array(ImageOps.exif_transpose(image))
    if _is_tensor(image):
        return _tensor_to_rgb(image)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    raise BadImageError(f"an image must be a path, a PIL image, a numpy array or a torch tensor, got "
                        f"{type(image).__name__}")


def image_label(image: object, index: int) -> str:
    """How results name an input: a file's path, else ``<array 0>`` / ``<tensor 1>`` / ``<PIL image 2>`` (its
    position among the images of the call, folders expanded)."""
    if isinstance(image, (str, Path)):
        return str(image)
    kind = "PIL image" if isinstance(image, Image.Image) else "tensor" if _is_tensor(image) else "array"
    return f"<{kind} {index}>"


def _is_tensor(image: object) -> bool:
    """A torch.Tensor (or subclass), told without importing torch: a program holding one has imported it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(image, torch.Tensor)


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    shape = f"{array.dtype} array of shape {tuple(array.shape)}"
    if array.dtype not in (np.uint8, np.uint16):
        raise BadImageError(f"a numpy image must be uint8 or uint16 (H, W[, C]), got a {shape} (floats in [0, 1]: "
                            f"pass (x * 255).round().astype(np.uint8), or a (3, H, W) torch tensor)")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise BadImageError(f"a numpy image must be (H, W), (H, W, 3) RGB or (H, W, 4) RGBA, got a {shape}"
                            + (" (channels first? give (H, W, C))" if array.ndim == 3 and array.shape[0] in (1, 3, 4)
                               else ""))
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)  # as a 16-bit file: the high byte
    if array.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    if array.shape[2] == 4:
        return _composite_on_white(array)
    return np.ascontiguousarray(array)


def _tensor_to_rgb(tensor) -> np.ndarray:
    shape = f"{str(tensor.dtype).removeprefix('torch.')} tensor of shape {tuple(tensor.shape)}"
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        hint = " (channels last? give (3, H, W), e.g. tensor.permute(2, 0, 1))" if tensor.ndim == 3 and \
            tensor.shape[-1] in (1, 3) else ""
        raise BadImageError(f"a tensor image must be (3, H, W) or (1, H, W), got a {shape}{hint}")
    pixels = tensor.detach().cpu()
    if pixels.numel() == 0:
        raise BadImageError(f"a tensor image must have pixels, got an empty {shape}")
    if pixels.is_floating_point():
        pixels = pixels.float()  # bfloat16 / float16 have no numpy counterpart
        low, high = float(pixels.min()), float(pixels.max())
        if not (low >= 0 and high <= 1):  # also NaN
            raise BadImageError(f"a float tensor image must hold values in [0, 1], got [{low:g}, {high:g}] in a {shape} "
                                "(not normalised: the model's preprocessing is applied to it)")
        pixels = (pixels * 255).round()
    elif str(pixels.dtype) != "torch.uint8":
        raise BadImageError(f"a tensor image must be float in [0, 1] or uint8, got a {shape}")
    array = pixels.numpy().astype(np.uint8).transpose(1, 2, 0)
    return np.ascontiguousarray(np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image of any mode to a ``(H, W, 3)`` uint8 RGB array."""
    if image.mode in _SIXTEEN_BIT_GREY_MODES:
        grey = np.asarray(image).astype(np.int64)
        # 16-bit range -> 8-bit by dropping the low byte; clip first because mode "I" is 32-bit signed.
        grey8 = (np.clip(grey, 0, 65535) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey8[:, :, None], 3, axis=2))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return _composite_on_white(np.asarray(image.convert("RGBA")))
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Blend ``(H, W, 4)`` uint8 RGBA over an opaque white background (straight alpha).

    ``out = (c * a + 255 * (255 - a)) / 255``, rounded to nearest, in integer arithmetic so the
    result is exact and identical on every platform.
    """
    rgb = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:4].astype(np.uint32)
    blended = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return np.ascontiguousarray(blended.astype(np.uint8))


def one_line(exc: BaseException) -> str:
    """Exception text squeezed onto one line (some decoders put newlines in their messages)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


T = TypeVar("T")


def check_in_threads(check: Callable[[int], T], count: int, desc: str, num_threads: int | None = None,
                     progress: bool = True, raise_first: bool = False) -> list[T]:
    """``[check(0), ..., check(count - 1)]`` computed in threads (Pillow and OpenCV release the GIL while decoding),
    in order, under a progress bar (on a terminal): the one way a dataset checks its files before training.

    With ``raise_first``, the first result (in order) that is an exception is raised and the checks not yet started
    are cancelled: for data where one bad file is an error (a verification protocol, masks).
    """
    from tqdm import tqdm

    pool = ThreadPoolExecutor(max_workers=num_threads or min(8, os.cpu_count() or 1))
    results: list[T] = []
    try:
        for result in tqdm(pool.map(check, range(count)), total=count, desc=desc, unit="img",
                           disable=None if progress else True):
            if raise_first and isinstance(result, BaseException):
                raise result
            results.append(result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results
