"""Semantic segmentation data: mask decoding, the VOC / mask-folder / COCO adapters and the Dataset.

Every format is reduced to one :class:`SegmentationData`: per-image :class:`SegmentationSample` records
(image file + mask file, or + COCO polygons / RLEs rasterised on demand), the class names (index 0 is the
first class, ``background`` for VOC and COCO) and the ignore value. The model, the trainer and the evaluator
never see a format.

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

Listing checks that files exist; pixel values are checked when a mask is decoded (every epoch, cheaply), or
up front for the whole split with :func:`verify_segmentation`. All user-facing failures are one-line
:class:`~resvision.errors.DataError`\\ s naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from tqdm import tqdm

from resvision.datasets.classification import IMAGE_EXTENSIONS
from resvision.datasets.coco import index_coco as _coco_index
from resvision.datasets.coco import read_coco_json as _read_coco_json
from resvision.datasets.coco import select_categories as _select_categories
from resvision.datasets.image_io import decoded, read_image
from resvision.datasets.transforms import SeededAugmentation
from resvision.datasets.voc import VOC_CLASSES
from resvision.datasets.voc import read_split as _read_voc_split
from resvision.errors import ConfigError, DataError

__all__ = [
    "VOC_SEG_CLASSES",
    "SegmentationData",
    "SegmentationDataset",
    "SegmentationSample",
    "load_coco_segmentation",
    "load_mask_folders",
    "load_voc_segmentation",
    "rasterize_coco",
    "read_mask",
    "verify_segmentation",
    "voc_colormap",
    "write_mask",
]

log = logging.getLogger("resvision")

# The 21 VOC segmentation classes: index 0 is the background, 1..20 the devkit's object classes in order.
VOC_SEG_CLASSES: tuple[str, ...] = ("background", *VOC_CLASSES)

SegmentationTransform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]

_VALUES_SHOWN = 10
_SINGLE_CHANNEL_MODES = frozenset({"P", "L", "1", "I;16", "I;16B", "I;16L", "I;16N", "I"})
_COLOUR_MODES = frozenset({"RGB", "RGBA"})


# ------------------------------------------------------------------------------------------------ masks


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
        mask = _map_colours(pixels, _colour_table(colors, num_classes, ignore_colors, ignore_index), path)
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


def _colour_table(
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


# ------------------------------------------------------------------------------------------ the records


@dataclass
class SegmentationSample:
    """One image and where its mask comes from.

    Attributes:
        image_path: The image file.
        mask_path: The mask file, or ``None`` when the mask is rasterised from :attr:`annotations` (COCO).
        stem: The sample's name (file name without extension), e.g. for prediction files.
        height: COCO: the annotated image height (the rasterised mask's); else ``None``.
        width: COCO: the annotated image width; else ``None``.
        annotations: COCO: ``[{"segmentation": polygons or RLE, "label": 1..K, "iscrowd": bool}]`` in file
            order (see :func:`rasterize_coco`); else ``None``.
        source: COCO: the annotation file (named in error messages); else ``None``.
        image_id: COCO: the image's id; else ``None``.
    """

    image_path: str
    mask_path: str | None
    stem: str
    height: int | None = None
    width: int | None = None
    annotations: list[dict[str, Any]] | None = None
    source: str | None = None
    image_id: int | None = None


@dataclass
class SegmentationData:
    """A loaded segmentation split.

    Attributes:
        samples: One record per image.
        classes: ``classes[i]`` names mask value ``i``; ``C = len(classes)``.
        ignore_index: The mask value that is not scored (not a class index).
        colors: The colour table of RGB mask files (``None``: masks hold indices).
        ignore_colors: Colours of RGB masks read as ``ignore_index``.
        category_ids: COCO: ``category_ids[i - 1]`` is the file's category id of class ``i >= 1``; else ``None``.
    """

    samples: list[SegmentationSample]
    classes: list[str]
    ignore_index: int = 255
    colors: list[list[int]] | None = None
    ignore_colors: list[list[int]] | None = None
    category_ids: list[int] | None = None

    def __post_init__(self) -> None:
        if 0 <= self.ignore_index < len(self.classes):
            raise ConfigError(
                f"ignore_index {self.ignore_index} is a class index (0..{len(self.classes) - 1}); "
                f"use a value outside, e.g. 255"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load_mask(self, index: int) -> np.ndarray:
        """The ``(H, W)`` int64 mask of sample ``index``: read from its file or rasterised (COCO)."""
        sample = self.samples[index]
        if sample.mask_path is None:
            return rasterize_coco(sample.annotations or [], sample.height or 0, sample.width or 0, self.ignore_index)
        return read_mask(
            sample.mask_path,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            colors=self.colors,
            ignore_colors=self.ignore_colors or (),
        )

    def mask_name(self, index: int) -> str:
        """How error messages name the mask of sample ``index``: its file, or the COCO file and image id."""
        sample = self.samples[index]
        if sample.mask_path is not None:
            return f"mask {sample.mask_path}"
        return f"annotations of image id {sample.image_id} in {sample.source}"


# ---------------------------------------------------------------------------------------------- VOC


def load_voc_segmentation(
    root: str | Path,
    split: str,
    classes: Sequence[str] | None = None,
    ignore_index: int = 255,
) -> SegmentationData:
    """Load one split of a VOC-layout segmentation dataset (``VOCdevkit/VOC2012`` or the same layout)::

        root/JPEGImages/<stem>.jpg
        root/SegmentationClass/<stem>.png       palette PNG of indices, 255 = boundary / ignore
        root/ImageSets/Segmentation/<split>.txt one <stem> per line

    Args:
        root: The folder holding the three sub-folders.
        split: Name of the split file, e.g. ``"train"``, ``"val"``, ``"trainval"``.
        classes: Class names by mask value; default :data:`VOC_SEG_CLASSES` (21, background first).
        ignore_index: The unscored mask value.

    Returns:
        The split, in split-file order (``stem`` = the listed name).

    Raises:
        DataError: Missing or empty split file (names it), a stem whose image or mask is missing (names the
            stem and the missing file).
    """
    root = Path(root)
    split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    stems = _read_voc_split(split_file)
    samples = []
    for stem in _progress(stems, desc=f"list VOC {split}", unit="img"):
        image = _voc_image(root / "JPEGImages", stem)
        if image is None:
            raise DataError(f"{split_file}: stem {stem!r} has no image file {root / 'JPEGImages' / stem}.jpg")
        mask = root / "SegmentationClass" / f"{stem}.png"
        if not mask.is_file():
            raise DataError(f"{split_file}: stem {stem!r} has no mask file {mask}")
        samples.append(SegmentationSample(str(image), str(mask), stem))
    return SegmentationData(samples, list(VOC_SEG_CLASSES if classes is None else classes), ignore_index)


def _voc_image(folder: Path, stem: str) -> Path | None:
    """``<stem>.jpg``, else ``<stem>`` with another image extension (a PNG-converted copy of VOC)."""
    default = folder / f"{stem}.jpg"
    if default.is_file():
        return default
    for ext in IMAGE_EXTENSIONS:
        for candidate in (folder / f"{stem}{ext}", folder / f"{stem}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


# ------------------------------------------------------------------------------------- mask folders


def load_mask_folders(
    images_dir: str | Path,
    masks_dir: str | Path,
    classes: Sequence[str],
    colors: Sequence[Sequence[int]] | None = None,
    ignore_index: int = 255,
    ignore_colors: Sequence[Sequence[int]] = (),
) -> SegmentationData:
    """Pair ``images_dir/<stem>.<ext>`` with ``masks_dir/<stem>.png`` (flat folders; hidden files ignored).

    Args:
        images_dir: Images with an extension in ``IMAGE_EXTENSIONS`` (any case).
        masks_dir: One ``<stem>.png`` per image: class indices, or RGB colours with ``colors``.
        classes: Class names by mask value.
        colors: The colour table of RGB masks (``colors[i]`` = ``[r, g, b]`` of class ``i``); checked here.
        ignore_index: The unscored mask value.
        ignore_colors: RGB mask colours read as ``ignore_index``.

    Returns:
        The samples sorted by stem. Masks without an image are ignored with one warning (their count).

    Raises:
        DataError: A missing or empty folder, two images with one stem, an image without a mask (names the
            image and the expected mask path).
        ConfigError: A malformed colour table.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    classes = list(classes)
    if colors is not None:
        _colour_table(colors, len(classes), ignore_colors, ignore_index)  # fail on a bad table before any file
    for folder, what in ((images_dir, "image"), (masks_dir, "mask")):
        if not folder.is_dir():
            raise DataError(f"{what} folder not found: {folder}")
    images: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not path.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        if path.stem in images:
            raise DataError(
                f"{path}: two images named {path.stem!r} ({images[path.stem].name} too); stems must be unique"
            )
        images[path.stem] = path
    if not images:
        raise DataError(f"image folder has no images ({', '.join(IMAGE_EXTENSIONS)}): {images_dir}")
    samples = []
    for stem in sorted(images):
        mask = masks_dir / f"{stem}.png"
        if not mask.is_file():
            raise DataError(f"{images[stem]}: no mask for this image (expected {mask})")
        samples.append(SegmentationSample(str(images[stem]), str(mask), stem))
    orphans = sorted(
        p.name for p in masks_dir.iterdir()
        if p.suffix.lower() == ".png" and not p.name.startswith(".") and p.stem not in images
    )
    if orphans:
        log.warning("%s: ignoring %d mask(s) without an image in %s (first: %s)",
                    masks_dir, len(orphans), images_dir, orphans[0])
    return SegmentationData(
        samples,
        classes,
        ignore_index,
        colors=None if colors is None else [list(c) for c in colors],
        ignore_colors=[list(c) for c in ignore_colors] or None,
    )


# --------------------------------------------------------------------------------------------- COCO


def load_coco_segmentation(
    annotations: str | Path,
    images_dir: str | Path,
    classes: Sequence[str] | None = None,
    ignore_index: int = 255,
) -> SegmentationData:
    """A COCO instances file as semantic segmentation: each image's instances painted into one class mask.

    * Classes: ``background`` (0), then the categories in sorted-id order as ``1..K`` (or in the order of
      ``classes``: category names, optionally led by ``"background"``); :attr:`SegmentationData.category_ids`
      maps them back. Annotations of categories not in ``classes`` are dropped, i.e. painted as background
      (torchvision's reference ``FilterAndRemapCocoCategories``), with one info line giving their count.
    * Masks are rasterised lazily with pycocotools' ``annToMask`` (:func:`rasterize_coco`): instances in file
      order (a later instance overwrites an earlier one where they overlap), then every crowd region as
      ``ignore_index``, so crowd pixels are never scored even where an instance overlaps them.
    * Segmentations are checked here (polygon lists, compressed or uncompressed RLE whose ``size`` is the
      image's); polygons with fewer than 3 points are dropped (pycocotools cannot rasterise them).

    Args:
        annotations: The JSON file.
        images_dir: Folder that ``images[*].file_name`` is relative to.
        classes: Category names and their order; default every category by id.
        ignore_index: The value of crowd pixels.

    Returns:
        The split ordered by image id, ``mask_path=None`` and the annotations kept in each sample.

    Raises:
        DataError: Missing / malformed JSON (names it), an annotation without a valid ``segmentation``
            (names the annotation id), an unknown class name, or a missing image file (names it).
    """
    path, images_dir = Path(annotations), Path(images_dir)
    coco = _coco_index(_read_coco_json(path), path)
    names = list(classes) if classes is not None else None
    if names and names[0] == "background" and "background" not in {str(c.get("name")) for c in coco.cats.values()}:
        names = names[1:]
    names, category_ids = _select_categories(coco, names, path)
    label_of = {cat: k for k, cat in enumerate(category_ids, start=1)}
    samples, dropped, short = [], 0, 0
    for image_id in _progress(sorted(coco.imgs), desc="list COCO", unit="img"):
        info = coco.imgs[image_id]
        if "file_name" not in info:
            raise DataError(f"{path}: image id {image_id} has no 'file_name'")
        image_path = images_dir / str(info["file_name"])
        if not image_path.is_file():
            raise DataError(f"{path}: image file not found: {image_path} (image id {image_id})")
        width, height = _coco_size(info, image_path, path)
        kept = []
        for ann in coco.imgToAnns.get(image_id, []):
            if ann.get("category_id") not in coco.cats:
                raise DataError(
                    f"{path}: annotation id {ann['id']} has category_id {ann.get('category_id')!r}, not in categories"
                )
            if ann["category_id"] not in label_of:
                dropped += 1
                continue
            segmentation, removed = _checked_segmentation(ann, height, width, path)
            short += removed
            if segmentation is not None:
                kept.append({"segmentation": segmentation, "label": label_of[ann["category_id"]],
                             "iscrowd": bool(ann.get("iscrowd", 0))})
        stem = Path(str(info["file_name"])).stem
        samples.append(SegmentationSample(str(image_path), None, stem, height, width, kept, str(path), image_id))
    if dropped:
        log.info("%s: %d annotation(s) of categories outside the selected classes painted as background", path, dropped)
    if short:
        log.warning("%s: dropped %d polygon(s) with fewer than 3 points", path, short)
    return SegmentationData(samples, ["background", *names], ignore_index, category_ids=category_ids)


def _coco_size(info: dict[str, Any], image_path: Path, path: Path) -> tuple[int, int]:
    """``(width, height)`` from the JSON, else from the image header."""
    width, height = info.get("width"), info.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return width, height
    try:
        return _image_size(image_path)
    except OSError as exc:
        raise DataError(f"{path}: image id {info['id']} has no width/height and {image_path} is unreadable "
                        f"({_one_line(exc)})") from None


def _checked_segmentation(ann: dict[str, Any], height: int, width: int, path: Path) -> tuple[Any, int]:
    """``(segmentation to rasterise or None, number of dropped short polygons)``; malformed ones raise."""
    seg = ann.get("segmentation")
    where = f"{path}: annotation id {ann['id']}"
    if isinstance(seg, list):
        polygons = []
        for poly in seg:
            if not isinstance(poly, list) or not all(_is_number(v) for v in poly) or len(poly) % 2:
                raise DataError(f"{where} has a malformed polygon (expected a flat list of x, y numbers)")
            polygons.append([float(v) for v in poly])
        kept = [p for p in polygons if len(p) >= 6]
        return (kept or None), len(polygons) - len(kept)
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not isinstance(size, list) or len(size) != 2 or not isinstance(counts, (str, list)):
            raise DataError(f"{where} has a malformed RLE (expected {{'size': [h, w], 'counts': ...}})")
        if [int(size[0]), int(size[1])] != [height, width]:
            raise DataError(f"{where}: RLE size {size} differs from the image's [height, width] [{height}, {width}]")
        if isinstance(counts, list) and sum(counts) != height * width:
            raise DataError(f"{where}: RLE counts sum to {sum(counts)}, not height * width = {height * width}")
        return seg, 0
    raise DataError(f"{where} has no 'segmentation' (expected polygons or an RLE)")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


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


# ------------------------------------------------------------------------------------------ dataset


class SegmentationDataset(SeededAugmentation, Dataset):
    """``(image, mask, index)`` triples for semantic segmentation, augmented reproducibly.

    Augmentation randomness is a pure function of ``(seed, epoch, index)``, as in
    :class:`~resvision.datasets.classification.ClassificationDataset`: the transform is reseeded before each
    sample if it has ``set_random_seed``. Call :meth:`set_epoch` before each epoch's iterator.

    Args:
        data: A loaded split.
        transform: ``transform(image (H, W, 3) uint8, mask (H, W) int64) -> (image (3, H', W') float tensor,
            mask (H', W') int64 tensor)``, e.g.
            :func:`~resvision.datasets.segmentation_transforms.segmentation_transforms`.
            ``None``: the image becomes a ``[0, 1]`` float tensor (not normalised), the mask an int64 tensor.
        train: Whether this is the training split (recorded for the task; the transform decides the augmentation).
        seed: Base seed of the augmentation randomness.
    """

    def __init__(
        self,
        data: SegmentationData,
        transform: SegmentationTransform | None = None,
        train: bool = False,
        seed: int = 0,
    ) -> None:
        self.data = data
        self.transform = transform
        self.train = bool(train)
        self.seed = int(seed)
        self.epoch = 0

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    @property
    def samples(self) -> list[SegmentationSample]:
        return self.data.samples

    @property
    def ignore_index(self) -> int:
        return self.data.ignore_index

    def __len__(self) -> int:
        return len(self.data.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(image (H, W, 3) uint8, mask (H, W) int64)`` of sample ``index``, sizes checked.

        Raises:
            BadImageError: The image cannot be decoded.
            DataError: The mask is bad (see :func:`read_mask`), or its size differs from the image's (names
                both files and both sizes).
        """
        sample = self.data.samples[index]
        image = read_image(sample.image_path)
        mask = self.data.load_mask(index)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{self.data.mask_name(index)} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                f"{sample.image_path} is {image.shape[1]}x{image.shape[0]}"
            )
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Return ``(image (3, H, W) float32, mask (H, W) int64, index)``."""
        if index < 0:
            index += len(self)
        image, mask = self.load(index)
        if self.transform is None:
            chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
            return torch.from_numpy(chw).div_(255.0), torch.from_numpy(mask), index
        self.reseed(index)
        tensor, target = self.transform(image, mask)
        return tensor, torch.as_tensor(target).long(), index


def verify_segmentation(data: SegmentationData, num_threads: int | None = None, progress: bool = True) -> None:
    """Check a whole split before training: every mask decoded and its values checked, sizes compared.

    Image sizes come from the file headers (with the EXIF orientation applied), so images are not decoded;
    COCO masks are not rasterised (their size is the annotated one). Reading runs in threads.

    Raises:
        DataError: The first bad sample in sample order (the message of :func:`read_mask` or of the size check).
    """
    threads = num_threads or min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=threads)
    try:
        problems = pool.map(functools.partial(_sample_problem, data), range(len(data.samples)))
        for problem in tqdm(problems, total=len(data.samples), desc="verify masks", unit="img",
                            disable=None if progress else True):
            if problem is not None:
                raise problem
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # the first problem stops the remaining reads


def _sample_problem(data: SegmentationData, index: int) -> DataError | None:
    sample = data.samples[index]
    try:
        if sample.mask_path is None:
            mask_w, mask_h = sample.width, sample.height
        else:
            mask_h, mask_w = data.load_mask(index).shape
        try:
            width, height = _image_size(Path(sample.image_path))
        except OSError as exc:
            return DataError(f"{sample.image_path}: cannot read the image ({_one_line(exc)})")
        if (mask_w, mask_h) != (width, height):
            return DataError(
                f"{data.mask_name(index)} is {mask_w}x{mask_h} (WxH) but its image {sample.image_path} "
                f"is {width}x{height}"
            )
    except DataError as exc:
        return exc
    return None


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as :func:`read_image` returns it (EXIF orientations 5-8 swap the sides); header only."""
    with Image.open(path) as image:
        width, height = image.size
        with contextlib.suppress(Exception):
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                width, height = height, width
    return width, height


def _progress(items: Sequence[Any], desc: str, unit: str) -> Any:
    return tqdm(items, desc=desc, unit=unit, disable=len(items) < 2000)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__

