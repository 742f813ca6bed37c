"""Semantic segmentation data: the records every format is reduced to, the mask-folder adapter and the Dataset.

Every format is reduced to one :class:`SegmentationData`: per-image :class:`SegmentationSample` records
(image file + mask file, or + COCO polygons / RLEs rasterised on demand), the class names (index 0 is the
first class, ``background`` for VOC and COCO) and the ignore value. The model, the trainer and the evaluator
never see a format. The adapters: :func:`load_mask_folders` (here),
:func:`~resvision.datasets.voc.load_voc_segmentation` and
:func:`~resvision.datasets.coco.load_coco_segmentation`; masks are decoded by
:mod:`resvision.datasets.masks` (which states the mask conventions).

Listing checks that files exist; pixel values are checked when a mask is decoded (every epoch, cheaply), or
up front for the whole split with :func:`verify_segmentation`. All user-facing failures are one-line
:class:`~resvision.errors.DataError`\\ s naming the file.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from resvision.datasets.classification import IMAGE_EXTENSIONS
from resvision.datasets.image_io import check_in_threads, image_size, one_line, read_image
from resvision.datasets.masks import colour_table, rasterize_coco, read_mask
from resvision.datasets.transforms import SeededAugmentation
from resvision.errors import ConfigError, DataError

__all__ = [
    "SegmentationData",
    "SegmentationDataset",
    "SegmentationSample",
    "load_mask_folders",
    "verify_segmentation",
]

log = logging.getLogger("resvision")

SegmentationTransform = Callable[[np.ndarray, np.ndarray], tuple[torch.Tensor, torch.Tensor]]


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
            order (see :func:`~resvision.datasets.masks.rasterize_coco`); else ``None``.
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
        colour_table(colors, len(classes), ignore_colors, ignore_index)  # fail on a bad table before any file
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
            DataError: The mask is bad (see :func:`~resvision.datasets.masks.read_mask`), or its size differs
                from the image's (names both files and both sizes).
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
        DataError: The first bad sample in sample order (the message of
            :func:`~resvision.datasets.masks.read_mask` or of the size check).
    """
    check_in_threads(functools.partial(_sample_problem, data), len(data.samples), "verify masks", num_threads, progress,
                     raise_first=True)


def _sample_problem(data: SegmentationData, index: int) -> DataError | None:
    sample = data.samples[index]
    try:
        if sample.mask_path is None:
            mask_w, mask_h = sample.width, sample.height
        else:
            mask_h, mask_w = data.load_mask(index).shape
        try:
            width, height = image_size(Path(sample.image_path))
        except OSError as exc:
            return DataError(f"{sample.image_path}: cannot read the image ({one_line(exc)})")
        if (mask_w, mask_h) != (width, height):
            return DataError(
                f"{data.mask_name(index)} is {mask_w}x{mask_h} (WxH) but its image {sample.image_path} "
                f"is {width}x{height}"
            )
    except DataError as exc:
        return exc
    return None
