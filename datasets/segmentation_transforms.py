"""Mask-aware augmentation for semantic segmentation, built from albumentations and reseedable per sample.

Train (the MMSegmentation / torchvision-reference recipe): random rescale of the whole image by a factor in
``scale`` -> pad to at least ``crop_size`` (image with 0, mask with ``ignore_index``, so padding is never
scored) -> random crop of ``crop_size`` -> horizontal flip -> colour jitter (image only) -> normalise -> tensors.
Evaluation: normalise only, at the image's own size (sliding-window or whole-image inference handles size).

Masks are resized with nearest-neighbour interpolation only: a class index has no "between" value, and a
bilinear resize of ``{0, 3}`` would invent classes 1 and 2 (and blur 255 into real classes). albumentations
applies ``mask_interpolation`` (default nearest) to the ``mask`` target of every geometric step here; the
tests assert that no new mask value ever appears.

Reproducibility: as for classification and detection (:class:`~resvision.datasets.transforms.AlbumentationsTransform`),
:class:`~resvision.datasets.segmentation.SegmentationDataset` reseeds the pipeline before every sample from
``(seed, epoch, index)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # offline: see resvision.datasets.transforms

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from resvision.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, AlbumentationsTransform  # noqa: E402

__all__ = ["SegmentationAlbumentations", "segmentation_transforms"]


class SegmentationAlbumentations(AlbumentationsTransform):
    """Wrap an ``A.Compose`` (last step ``ToTensorV2``) as a segmentation transform.

    Call: ``(image (H, W, 3) uint8, mask (H, W) integer) -> (image (3, H', W') float32 tensor,
    mask (H', W') int64 tensor)``.

    OpenCV cannot resize int64 arrays, so the mask travels through the pipeline as uint8 when all its values
    (and the padding value) fit in 0..255, else as int32; the output is int64 either way.

    Args:
        pipeline: The albumentations pipeline.
        ignore_index: The mask padding value (used to choose the mask's working dtype).
    """

    def __init__(self, pipeline: A.Compose, ignore_index: int = 255) -> None:
        super().__init__(pipeline)
        self.ignore_index = int(ignore_index)

    def __call__(  # type: ignore[override]
        self, image: np.ndarray, mask: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = np.asarray(mask)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape[:2]}")
        low = min(int(mask.min(initial=0)), self.ignore_index)
        high = max(int(mask.max(initial=0)), self.ignore_index)
        working = np.uint8 if 0 <= low and high <= 255 else np.int32
        out = self.pipeline(image=image, mask=np.ascontiguousarray(mask, dtype=working))
        return out["image"], torch.as_tensor(out["mask"]).long()


def segmentation_transforms(
    train: bool,
    crop_size: int | Sequence[int] = 512,
    scale: tuple[float, float] = (0.5, 2.0),
    hflip: float = 0.5,
    color_jitter: float = 0.2,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = 255,
) -> SegmentationAlbumentations:
    """Build the segmentation train or evaluation pipeline.

    Train:

    1. ``RandomScale``: the whole image resized by a factor drawn uniformly from ``scale`` (both sides, aspect
       kept; skipped when ``scale == (1, 1)``). Image: bilinear, ``INTER_AREA`` when shrinking; mask: nearest.
    2. ``PadIfNeeded`` to at least ``crop_size``, centred: image pixels the mean colour (0 after ``Normalize``,
       the value the batch collate and the model's stride padding use, so the network sees one padding in
       training and evaluation), mask pixels ``ignore_index``.
    3. ``RandomCrop(crop_size)``.
    4. ``HorizontalFlip(p=hflip)`` (when ``hflip > 0``).
    5. ``ColorJitter(brightness=contrast=saturation=color_jitter, hue=0)`` on the image only (when ``> 0``).
    6. ``Normalize(mean, std)`` on the image, then tensors.

    Evaluation: ``Normalize(mean, std)`` and tensors; no resize, no crop.

    Args:
        train: Training (random) or evaluation (deterministic) pipeline.
        crop_size: Training crop, ``S`` or ``(height, width)``.
        scale: Range of the rescale factor, ``0 < low <= high``.
        hflip: Probability of a horizontal flip.
        color_jitter: Strength ``j`` of brightness / contrast / saturation jitter (factors in ``[1-j, 1+j]``).
        mean: Per-channel RGB mean in 0..1 units.
        std: Per-channel RGB standard deviation in 0..1 units.
        ignore_index: Mask value of padded pixels.

    Returns:
        A :class:`SegmentationAlbumentations`.

    Raises:
        ValueError: A crop side < 1, a scale bound <= 0 or reversed, ``hflip`` outside ``[0, 1]`` or a negative
            ``color_jitter``.
    """
    crop_h, crop_w = _crop_size(crop_size)
    low, high = (float(s) for s in scale)
    if not 0.0 < low <= high:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
    if not 0.0 <= hflip <= 1.0:
        raise ValueError(f"hflip must be in [0, 1], got {hflip}")
    if color_jitter < 0:
        raise ValueError(f"color_jitter must be >= 0, got {color_jitter}")
    steps: list[A.BasicTransform] = []
    if train:
        if (low, high) != (1.0, 1.0):
            steps.append(
                A.RandomScale(
                    scale_limit=(low - 1.0, high - 1.0),  # albumentations draws the factor from 1 + limit
                    interpolation=cv2.INTER_LINEAR,
                    mask_interpolation=cv2.INTER_NEAREST,
                    area_for_downscale="image",  # anti-aliased shrinking for the image only; masks stay nearest
                    p=1.0,
                )
            )
        steps += [
            A.PadIfNeeded(
                min_height=crop_h,
                min_width=crop_w,
                position="center",
                border_mode=cv2.BORDER_CONSTANT,
                fill=tuple(round(255.0 * m) for m in mean),  # uint8 image: 0 after Normalize to < 0.01
                fill_mask=ignore_index,
            ),
            A.RandomCrop(height=crop_h, width=crop_w),
        ]
        if hflip > 0:
            steps.append(A.HorizontalFlip(p=hflip))
        if color_jitter > 0:
            j = float(color_jitter)
            steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=1.0))
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    # seed=0 only makes a never-reseeded pipeline reproducible; SegmentationDataset reseeds it per sample.
    return SegmentationAlbumentations(A.Compose(steps, seed=0), ignore_index=ignore_index)


def _crop_size(crop_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(crop_size, (int, np.integer)):
        sides = (int(crop_size), int(crop_size))
    else:
        sides = tuple(int(s) for s in crop_size)
        if len(sides) != 2:
            raise ValueError(f"crop_size must be S or (height, width), got {crop_size!r}")
    if min(sides) < 1:
        raise ValueError(f"crop_size must be >= 1, got {crop_size!r}")
    return sides[0], sides[1]
