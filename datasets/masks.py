"""Class-index masks: reading and writing mask files, the VOC palette, COCO polygons / RLEs rasterised.

Mask conventions:

* A mask is an ``(H, W)`` int64 array of class indices ``0..C-1`` plus ``ignore_index`` (default 255:
  VOC's object boundaries, padding added by augmentation, COCO crowd regions); ignored pixels count
  neither in the loss nor in the metrics.
* On disk a mask is a class-index PNG: palette (``P``: the pixel values are the indices, the palette is only
  for viewing, which is how VOC's ``SegmentationClass`` PNGs work), greyscale (``L``) or 16-bit greyscale;
  or an RGB colour mask mapped to indices through a colour table (``colors[i]`` is the ``[r, g, b]`` of class
  ``i``). See :func:`read_mask`.
* Masks are never EXIF-rotated (PNG masks have no orientation); an image whose EXIF orientation turns it is
  therefore refused by the size check unless it is square (its mask would not line up anyway).

All user-facing failures are one-line :class:`~resvision.errors.DataError`\\ s naming the file.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from resvision.datasets.image_io import decoded
from resvision.errors import ConfigError, DataError

__all__ = ["rasterize_coco", "read_mask", "voc_colormap", "write_mask"]

_VALUES_SHOWN = 10
_SINGLE_CHANNEL_MODES = frozenset({"P", "L", "1", "I;16", "I;16B", "I;16L", "I;16N", "I"})
_COLOUR_MODES = frozenset({"RGB", "RGBA"})


def read_mask(
    path: str | Path,
    *,
    num_classes: int,
    ignore_index: int = 255,
    colors: Sequence[Sequence[int]] | None = None,
    ignore_colors: Sequence[Sequence[int]] = (),
) -> np.ndarray:
    """Decode a mask file into class indices.

    * Palette (``P``), greyscale (``L``, ``1``) and 16-bit greyscale PNGs hold the indices themselves (a
      palette PNG's colours are ignored, even when ``colors`` is given).
    * ``RGB`` (and fully opaque ``RGBA``) masks are colour masks: each pixel's colour is looked up in
      ``colors`` (``colors[i]`` = ``[r, g, b]`` of class ``i``); colours in ``ignore_colors`` become
      ``ignore_index``.

    Args:
        path: The mask file (PNG; any lossless format Pillow reads).
        num_classes: ``C``; valid indices are ``0..C-1``.
        ignore_index: The value of pixels that are not scored.
        colors: The colour table of RGB masks, one ``[r, g, b]`` per class (length ``C``).
        ignore_colors: Colours of RGB masks that mean "ignore" (e.g. a void colour).

    Returns:
        ``(H, W)`` int64 array with values in ``0..C-1`` or ``ignore_index``.

    Raises:
        DataError: (one line naming the file) missing or corrupt file; index values outside ``0..C-1`` that
            are not ``ignore_index`` (lists them); an RGB mask without ``colors``; a colour not in the table
            (names it); a mask with other channels (``LA``, ``CMYK``, transparent ``RGBA``...) or float pixels.
        ConfigError: A malformed colour table (wrong length, not ``[r, g, b]`` in 0..255, a duplicate).
    """
    path = Path(path)
    with decoded(path, "mask", DataError) as image:
        mode, bands = image.mode, len(image.getbands())
        pixels = np.asarray(image)
    if mode in _SINGLE_CHANNEL_MODES:
        mask = pixels.astype(np.int64)
    elif mode in _COLOUR_MODES:
        if colors is None:
            same = pixels.ndim == 3 and bool(np.all(pixels[..., 0:1] == pixels[..., 1:3]))
            hint = " (its 3 channels are equal: an index mask saved as RGB? save it as a greyscale PNG)" if same else ""
            raise DataError(
                f"{path}: RGB colour mask but no colour table (set colors: one [r, g, b] per class, "
                f"or save class indices as a palette / greyscale PNG){hint}"
            )
        if mode == "RGBA":
            if not np.all(pixels[..., 3] == 255):
                raise DataError(f"{path}: colour mask has transparent pixels; expected an opaque RGB mask")
            pixels = pixels[..., :3]
        mask = _map_colours(pixels, colour_table(colors, num_classes, ignore_colors, ignore_index), path)
    else:
        kind = "float pixels" if mode == "F" else f"{bands} channels"
        raise DataError(
            f"{path}: mask has mode {mode} ({kind}); expected a class-index PNG (palette 'P' or greyscale 'L') "
            f"or an RGB colour mask"
        )
    _check_values(mask, num_classes, ignore_index, path)
    return mask


def _check_values(mask: np.ndarray, num_classes: int, ignore_index: int, path: Path) -> None:
    """Refuse values outside ``0..C-1`` that are not ``ignore_index`` (naming up to 10 of them)."""
    if mask.size == 0:
        raise DataError(f"{path}: the mask has no pixels")
    low, high = int(mask.min()), int(mask.max())
    if low >= 0 and high < num_classes:
        return
    if low >= 0 and high <= 65535:  # index PNGs: a linear-time count instead of a sort
        values = np.flatnonzero(np.bincount(mask.ravel()))
    else:
        values = np.unique(mask)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if len(bad) == 0:
        return
    shown = ", ".join(str(int(v)) for v in bad[:_VALUES_SHOWN]) + (", ..." if len(bad) > _VALUES_SHOWN else "")
    raise DataError(
        f"{path}: mask values {shown} ({len(bad)} distinct) are outside 0..{num_classes - 1} "
        f"(num_classes={num_classes}) and not the ignore value {ignore_index}"
    )


@functools.lru_cache(maxsize=8)
def _colour_table_cached(
    colors: tuple[tuple[int, ...], ...], num_classes: int, ignore_colors: tuple[tuple[int, ...], ...], ignore: int
) -> dict[int, int]:
    if len(colors) != num_classes:
        raise ConfigError(f"colors: {len(colors)} colours for {num_classes} classes (need one [r, g, b] per class)")
    table: dict[int, int] = {}
    for value, colour in [*((i, c) for i, c in enumerate(colors)), *((ignore, c) for c in ignore_colors)]:
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            raise ConfigError(f"colors: {list(colour)} is not an [r, g, b] colour with values in 0..255")
        code = _code(*colour)
        if code in table:
            raise ConfigError(f"colors: colour {list(colour)} is listed twice (classes must have distinct colours)")
        table[code] = value
    return table


def colour_table(
    colors: Sequence[Sequence[int]], num_classes: int, ignore_colors: Sequence[Sequence[int]], ignore_index: int
) -> dict[int, int]:
    """``{r << 16 | g << 8 | b: class index}`` (validated and cached: every mask of a split shares it)."""
    try:
        as_tuple = tuple(tuple(int(c) for c in colour) for colour in colors)
        ignored = tuple(tuple(int(c) for c in colour) for colour in ignore_colors)
    except (TypeError, ValueError):
        raise ConfigError(f"colors: expected a list of [r, g, b] integer triples, got {colors!r}") from None
    return _colour_table_cached(as_tuple, int(num_classes), ignored, int(ignore_index))


def _code(r: int, g: int, b: int) -> int:
    return (int(r) << 16) | (int(g) << 8) | int(b)


def _map_colours(rgb: np.ndarray, table: dict[int, int], path: Path) -> np.ndarray:
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)
    found, inverse = np.unique(codes, return_inverse=True)
    unknown = [int(c) for c in found if int(c) not in table]
    if unknown:
        first = unknown[0]
        pixels = int(np.count_nonzero(codes == first))
        others = f" and {len(unknown) - 1} other unknown colour(s)" if len(unknown) > 1 else ""
        raise DataError(
            f"{path}: colour ({first >> 16}, {(first >> 8) & 255}, {first & 255}) ({pixels} pixels){others} "
            f"is not in the colour table of {len(table)} colours"
        )
    lookup = np.array([table[int(c)] for c in found], dtype=np.int64)
    return lookup[inverse.reshape(codes.shape)]


def voc_colormap(n: int = 256) -> np.ndarray:
    """The Pascal VOC palette: ``(n, 3)`` uint8, colour ``i`` from the bits of ``i`` (VOCdevkit's ``labelcolormap``).

    Index 0 is black, 1 (aeroplane) dark red ``(128, 0, 0)``, 255 (ignore) ``(224, 224, 192)``.
    """
    colours = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[i] = (r, g, b)
    return colours


def write_mask(path: str | Path, mask: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write class indices ``0..255`` as a palette PNG (``palette``: ``(n, 3)`` uint8, default :func:`voc_colormap`).

    The file holds the indices (what :func:`read_mask` returns) and shows in colour in any viewer.

    Raises:
        ValueError: ``mask`` is not 2-D or has values outside ``0..255``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0 or mask.min() < 0 or mask.max() > 255:
        raise ValueError(f"write_mask needs a 2-D mask with values in 0..255, got shape {mask.shape}")
    colours = voc_colormap() if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    image = Image.fromarray(mask.astype(np.uint8))  # mode L; putpalette turns it into P with the same values
    image.putpalette(colours[:256].reshape(-1).tolist())
    image.save(path)


def rasterize_coco(
    annotations: Sequence[dict[str, Any]], height: int, width: int, ignore_index: int = 255
) -> np.ndarray:
    """Paint instance annotations into one ``(height, width)`` int64 class mask (0 = background).

    Each ``{"segmentation", "label", "iscrowd"}`` entry is rasterised with pycocotools' ``COCO.annToMask``;
    non-crowd instances are painted in order with their ``label`` (later over earlier), then crowd regions with
    ``ignore_index`` (over everything).
    """
    mask = np.zeros((height, width), dtype=np.int64)
    if not annotations:
        return mask
    coco = COCO()  # a bare index: annToMask only needs the image's height and width
    coco.imgs = {0: {"height": height, "width": width}}
    crowd = [ann for ann in annotations if ann["iscrowd"]]
    for ann in [ann for ann in annotations if not ann["iscrowd"]] + crowd:
        pixels = coco.annToMask({"image_id": 0, "segmentation": ann["segmentation"]}).astype(bool)
        mask[pixels] = ignore_index if ann["iscrowd"] else ann["label"]
    return mask
