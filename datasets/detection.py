"""Object detection data: the format-free sample record, box cleaning, the Dataset and its collate.

Every detection format (:func:`~resvision.datasets.coco.load_coco`, :func:`~resvision.datasets.voc.load_voc`,
the built-in :func:`~resvision.datasets.shapes.load_shapes`) is reduced to one :class:`DetectionData`:
per-image :class:`DetectionSample` records in absolute ``x1 y1 x2 y2`` pixels with labels ``1..K``
(0 is the background, torchvision's detection convention), plus the ground truth as a COCO instances
dict for pycocotools' ``COCOeval``. The model, the trainer and the evaluators never see a format.

Conventions:

* Boxes are continuous pixel coordinates: the pixel at column ``i`` spans ``[i, i + 1)``, so a box
  covering a whole ``W x H`` image is ``(0, 0, W, H)`` (COCO's and torchvision's convention).
* Boxes are clipped to the image and zero / negative-area boxes are dropped when loading, by
  :func:`clean_boxes`, with counts in :attr:`DetectionData.stats` (torchvision's reference
  ``ConvertCocoPolysToMask`` does the same filtering on the fly).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from resvision.datasets.image_io import read_image
from resvision.datasets.transforms import SeededAugmentation
from resvision.errors import DataError

__all__ = [
    "DetectionData",
    "DetectionDataset",
    "DetectionSample",
    "clean_boxes",
    "detection_collate",
]

log = logging.getLogger("resvision")

# Show a progress bar only for work long enough to notice (tens of thousands of stat calls / XML files).
_PROGRESS_MIN_ITEMS = 2000

DetectionTransform = Callable[..., tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class DetectionSample:
    """One image and its boxes.

    Attributes:
        image_path: The image file.
        image_id: The image's id in :attr:`DetectionData.coco_gt` (COCO: the file's id; VOC / shapes-VOC:
            1-based position in the split file).
        width: Image width ``W`` in pixels, as annotated.
        height: Image height ``H`` in pixels, as annotated.
        boxes: ``(N, 4)`` float32 ``x1 y1 x2 y2`` absolute pixels, inside ``[0, W] x [0, H]``, positive area.
        labels: ``(N,)`` int64 in ``1..K``; ``classes[k - 1]`` names label ``k``.
        iscrowd: ``(N,)`` bool, COCO crowd regions (ignored in training, honoured by ``COCOeval``).
        difficult: ``(N,)`` bool, VOC "difficult" objects (ignored by the VOC AP protocol).
    """

    image_path: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.iscrowd = np.asarray(self.iscrowd, dtype=bool).reshape(-1)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        n = len(self.boxes)
        if not len(self.labels) == len(self.iscrowd) == len(self.difficult) == n:
            raise ValueError(
                f"{self.image_path}: {n} boxes but {len(self.labels)} labels, {len(self.iscrowd)} iscrowd, "
                f"{len(self.difficult)} difficult flags"
            )


@dataclass
class DetectionData:
    """A loaded detection split.

    Attributes:
        samples: One record per image (images without boxes included unless dropped at load time).
        classes: ``classes[k - 1]`` is the name of label ``k``; ``K = len(classes)``.
        category_ids: ``category_ids[k - 1]`` is the dataset's own category id of label ``k``
            (COCO: the original, possibly non-contiguous ids; VOC: ``1..K``). Map predictions back
            with it before handing them to ``COCOeval``.
        coco_gt: The ground truth as a COCO instances dict (``images``, ``annotations``, ``categories``),
            restricted to :attr:`samples`' images; ready for ``pycocotools.coco.COCO``. See each loader
            for what it holds (VOC: ``difficult`` objects are plain boxes plus a ``"difficult": 1`` key).
        stats: Cleaning counts: ``images``, ``boxes``, ``boxes_clipped``, ``boxes_degenerate_dropped``,
            ``images_empty_kept``, ``images_empty_dropped``, ``crowd_boxes``, ``difficult_boxes``.
    """

    samples: list[DetectionSample]
    classes: list[str]
    category_ids: list[int]
    coco_gt: dict[str, Any]
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def label_to_category(self) -> dict[int, int]:
        """``{label: dataset category id}`` for labels ``1..K``."""
        return {k: cat for k, cat in enumerate(self.category_ids, start=1)}


# --------------------------------------------------------------------------------------------- cleaning


def clean_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip ``x1 y1 x2 y2`` boxes to a ``width x height`` image and flag the degenerate ones.

    Args:
        boxes: ``(N, 4)`` float boxes in absolute pixels.
        width: Image width ``W``.
        height: Image height ``H``.

    Returns:
        ``(clipped (N, 4) float32, was_clipped (N,) bool, keep (N,) bool)`` where ``keep`` is false for
        boxes with zero or negative width or height after clipping (e.g. entirely outside the image).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    limits = np.array([width, height, width, height], dtype=np.float32)
    clipped = np.clip(boxes, 0.0, limits)
    was_clipped = np.any(clipped != boxes, axis=1)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, was_clipped & keep, keep


def new_stats() -> dict[str, int]:
    """The zeroed counters every loader fills (see :attr:`DetectionData.stats`)."""
    keys = ("images", "boxes", "boxes_clipped", "boxes_degenerate_dropped", "images_empty_kept",
            "images_empty_dropped", "crowd_boxes", "difficult_boxes")
    return dict.fromkeys(keys, 0)


def report_cleaning(source: str, stats: dict[str, int]) -> None:
    """Log what cleaning changed: one warning for dropped boxes (with the total), info for the rest."""
    if stats["boxes_degenerate_dropped"]:
        log.warning(
            "%s: dropped %d box(es) with zero or negative area after clipping to the image",
            source, stats["boxes_degenerate_dropped"],
        )
    if stats["boxes_clipped"]:
        log.info("%s: clipped %d box(es) that extended outside their image", source, stats["boxes_clipped"])
    if stats["images_empty_dropped"]:
        log.info("%s: dropped %d image(s) without boxes (keep_empty=False)", source, stats["images_empty_dropped"])


def progress(items: Sequence[Any], desc: str, unit: str) -> Any:
    """``items`` wrapped in a tqdm bar when there are enough of them to take noticeable time."""
    return tqdm(items, desc=desc, unit=unit, disable=len(items) < _PROGRESS_MIN_ITEMS)


# ---------------------------------------------------------------------------------------------- dataset


class DetectionDataset(SeededAugmentation, Dataset):
    """``(image, target)`` pairs for torchvision-style detectors, augmented reproducibly.

    ``image`` is a ``(3, H, W)`` float32 tensor in ``[0, 1]`` (torchvision's detectors normalise and
    resize internally, in ``GeneralizedRCNNTransform``, and map predictions back to the input size);
    ``target`` is ``dict(boxes=(N, 4) float32 xyxy, labels=(N,) int64, image_id=int, iscrowd=(N,) bool,
    difficult=(N,) bool)``.

    ``train=True`` removes crowd boxes from the target: crowd regions are ignored in training (as in
    torchvision's references and Detectron2) but kept in :attr:`DetectionData.coco_gt` for evaluation.
    Difficult objects stay in training targets (Detectron2's choice: they do not hurt accuracy).

    Augmentation randomness is a pure function of ``(seed, epoch, index)``, as in
    :class:`~resvision.datasets.classification.ClassificationDataset`: the transform is reseeded before
    each sample if it has ``set_random_seed``. Call :meth:`set_epoch` before each epoch's iterator.

    Args:
        data: A loaded split.
        transform: ``transform(image (H, W, 3) uint8, boxes (N, 4), labels (N,), iscrowd (N,), difficult (N,))
            -> (image (3, H', W') float tensor, boxes (M, 4), labels (M,), iscrowd (M,), difficult (M,))``
            (see :func:`~resvision.datasets.detection_transforms.detection_transforms`); it may drop boxes.
            ``None``: the image is only converted to a tensor.
        train: Drop crowd boxes from targets.
        seed: Base seed of the augmentation randomness.
    """

    def __init__(
        self,
        data: DetectionData,
        transform: DetectionTransform | None = None,
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
        """``classes[k - 1]`` names label ``k``."""
        return self.data.classes

    @property
    def samples(self) -> list[DetectionSample]:
        """The per-image records."""
        return self.data.samples

    @property
    def coco_gt(self) -> dict[str, Any]:
        """The ground truth as a COCO instances dict (for ``COCOeval``)."""
        return self.data.coco_gt

    def __len__(self) -> int:
        return len(self.data.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return ``(image (3, H, W) float32 in [0, 1], target dict)`` for sample ``index``.

        Raises:
            BadImageError: The image file is missing or cannot be decoded.
            DataError: The decoded image size differs from the annotated one (e.g. an EXIF rotation
                the annotations did not apply; Detectron2's ``check_image_size`` refuses this too).
        """
        if index < 0:
            index += len(self)
        image, arrays = self.read(index)
        if self.transform is None:
            chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)  # a writable copy
            tensor = torch.from_numpy(chw).div_(255.0)
        else:
            self.reseed(index)
            tensor, *arrays = self.transform(image, *arrays)
        return tensor, self.target(index, *arrays)

    def read(self, index: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Sample ``index``'s decoded image (size checked) and its ``(boxes, labels, iscrowd, difficult)`` (crowd
        boxes dropped in training)."""
        sample = self.data.samples[index]
        image = read_image(sample.image_path)
        if image.shape[:2] != (sample.height, sample.width):
            raise DataError(
                f"{sample.image_path}: decoded size {image.shape[1]}x{image.shape[0]} differs from the annotated "
                f"{sample.width}x{sample.height} (EXIF rotation?); boxes would be misplaced"
            )
        keep = ~sample.iscrowd if self.train else np.ones(len(sample.boxes), dtype=bool)
        return image, (sample.boxes[keep], sample.labels[keep], sample.iscrowd[keep], sample.difficult[keep])

    def target(self, index: int, boxes: np.ndarray, labels: np.ndarray, iscrowd: np.ndarray,
               difficult: np.ndarray) -> dict[str, Any]:
        """The target dict of sample ``index`` with these (augmented) boxes and flags."""
        return {
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "image_id": self.data.samples[index].image_id,
            "iscrowd": torch.as_tensor(np.asarray(iscrowd, dtype=bool).reshape(-1)),
            "difficult": torch.as_tensor(np.asarray(difficult, dtype=bool).reshape(-1)),
        }


def detection_collate(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Collate ``(image, target)`` pairs into ``(images, targets)`` lists (images keep their own sizes).

    torchvision's detectors take a list of ``(3, H_i, W_i)`` tensors and batch them themselves.
    """
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets
