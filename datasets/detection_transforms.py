"""Box-aware augmentation for detection, built from albumentations and reseedable per sample.

Train: scale jitter -> horizontal flip -> colour jitter; evaluation: nothing but the conversion to a
``[0, 1]`` tensor. Neither resizes to a fixed size: torchvision's detectors resize inside the model
(``GeneralizedRCNNTransform``: shorter side to ``min_size``, longer side at most ``max_size``) and map
predicted boxes back to the size of the image they were given, so evaluation predictions come out in
original image coordinates, which is what ``COCOeval`` compares against.

Scale jitter is a zoom of the content on a canvas of unchanged size (``A.Affine(scale=...)``), not a
resize of the whole image (``A.RandomScale``): the model's own resize would map a resized image back to
the same ``min_size`` and undo the jitter. Zooming in pushes boxes partly out of the canvas: they are
clipped, and dropped when less than ``min_visibility`` of their area remains.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # offline: see resvision.datasets.transforms

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from resvision.datasets.transforms import IMAGENET_MEAN, AlbumentationsTransform  # noqa: E402

__all__ = ["DetectionAlbumentations", "detection_transforms"]

# Padding colour when zooming out: the ImageNet mean, i.e. zero after the detector's normalisation.
_FILL = tuple(round(255 * m) for m in IMAGENET_MEAN)


class DetectionAlbumentations(AlbumentationsTransform):
    """Wrap an ``A.Compose`` with ``bbox_params`` as a detection transform.

    Call: ``(image (H, W, 3) uint8, boxes (N, 4) xyxy pixels, labels (N,), iscrowd (N,), difficult (N,))
    -> (image (3, H', W') float32 tensor, boxes (M, 4) float32, labels (M,) int64, iscrowd (M,) bool,
    difficult (M,) bool)``, ``M <= N``. The pipeline carries one label field, ``box_index``, so whatever
    boxes it drops, every per-box array stays aligned with the survivors.

    Args:
        pipeline: An albumentations pipeline whose last step is ``ToTensorV2``, with
            ``BboxParams(format="pascal_voc", label_fields=["box_index"])`` when it moves pixels
            (without, boxes pass through unchanged).
    """

    def __call__(  # type: ignore[override]
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        iscrowd: np.ndarray | None = None,
        difficult: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> tuple:
        """With ``mask`` (an ``(H, W)`` class-index mask of the same image, moved by the same geometric steps,
        nearest-neighbour, zoomed-out borders filled with the pipeline's ``fill_mask``) the result ends with it as an
        ``(H', W')`` int64 tensor."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        n = len(boxes)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        iscrowd = np.zeros(n, dtype=bool) if iscrowd is None else np.asarray(iscrowd, dtype=bool).reshape(-1)
        difficult = np.zeros(n, dtype=bool) if difficult is None else np.asarray(difficult, dtype=bool).reshape(-1)
        extra = {} if mask is None else {"mask": mask}
        if "bboxes" not in self.pipeline.processors:  # no geometric step (evaluation): boxes pass unchanged
            out = self.pipeline(image=image, **extra)
            tensor = out["image"]
            new_boxes, index = boxes, np.arange(n, dtype=np.int64)
        else:
            out = self.pipeline(image=image, bboxes=boxes, box_index=np.arange(n, dtype=np.int64), **extra)
            tensor = out["image"]
            # albumentations works in coordinates normalised by the image size; the round trip leaves
            # ~1e-5 px noise (60 -> 60.000004), which rounding to 1/1000 px removes.
            new_boxes = np.round(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4), 3)
            index = np.asarray(out["box_index"], dtype=np.int64).reshape(-1)
        height, width = tensor.shape[-2:]
        new_boxes = np.clip(new_boxes, 0.0, np.array([width, height, width, height], dtype=np.float32))
        keep = (new_boxes[:, 2] > new_boxes[:, 0]) & (new_boxes[:, 3] > new_boxes[:, 1])
        index = index[keep]
        result = (tensor, new_boxes[keep], labels[index], iscrowd[index], difficult[index])
        return result if mask is None else (*result, torch.as_tensor(out["mask"]).long())


def detection_transforms(
    train: bool,
    hflip: float = 0.5,
    scale_jitter: tuple[float, float] = (0.8, 1.2),
    color_jitter: float = 0.2,
    min_visibility: float = 0.3,
    mask_fill: int = 0,
) -> DetectionAlbumentations:
    """Build the detection train or evaluation pipeline.

    Train: ``Affine(scale=scale_jitter, keep_ratio=True)`` about the image centre, canvas size unchanged,
    padding with the ImageNet mean (skipped when ``scale_jitter == (1, 1)``) -> ``HorizontalFlip(p=hflip)``
    (``x1' = W - x2``, ``x2' = W - x1``) -> ``ColorJitter(brightness=contrast=saturation=color_jitter,
    hue=0)`` (when ``color_jitter > 0``). Boxes are clipped to the image; a box keeping less than
    ``min_visibility`` of its area is dropped with its label and flags.

    Evaluation: identity (no resize, no normalisation; module docstring).

    Args:
        train: Training (random) or evaluation (identity) pipeline.
        hflip: Probability of a horizontal flip.
        scale_jitter: Range of the zoom factor (``> 1`` zooms in).
        color_jitter: Strength ``j`` of brightness / contrast / saturation jitter (factors in ``[1-j, 1+j]``).
        min_visibility: Minimum fraction of a box's area that must stay inside the image.
        mask_fill: Value of a mask's pixels outside the zoomed-out image (a segmentation mask's ``ignore_index``).

    Returns:
        A :class:`DetectionAlbumentations`: ``(image uint8 (H, W, 3), boxes, labels, iscrowd, difficult)
        -> (tensor (3, H, W) float32 in [0, 1], boxes, labels, iscrowd, difficult)``.

    Raises:
        ValueError: A scale bound <= 0 or reversed, or ``min_visibility`` outside ``[0, 1]``.
    """
    low, high = (float(s) for s in scale_jitter)
    if not 0.0 < low <= high:
        raise ValueError(f"scale_jitter must be (low, high) with 0 < low <= high, got {scale_jitter}")
    if not 0.0 <= min_visibility <= 1.0:
        raise ValueError(f"min_visibility must be in [0, 1], got {min_visibility}")
    steps: list[A.BasicTransform] = []
    if train:
        if (low, high) != (1.0, 1.0):
            steps.append(
                A.Affine(
                    scale=(low, high),
                    keep_ratio=True,
                    interpolation=cv2.INTER_LINEAR,
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=_FILL,
                    fill_mask=mask_fill,
                    p=1.0,
                )
            )
        if hflip > 0:
            steps.append(A.HorizontalFlip(p=hflip))
        if color_jitter > 0:
            j = float(color_jitter)
            steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=1.0))
    steps += [A.ToFloat(max_value=255.0), ToTensorV2()]
    bbox_params = None
    if any(isinstance(step, (A.Affine, A.HorizontalFlip)) for step in steps):  # geometric steps
        bbox_params = A.BboxParams(
            format="pascal_voc", label_fields=["box_index"], min_visibility=min_visibility, clip=True
        )
    # seed=0 only makes a never-reseeded pipeline reproducible; DetectionDataset reseeds it per sample.
    return DetectionAlbumentations(A.Compose(steps, bbox_params=bbox_params, seed=0))
