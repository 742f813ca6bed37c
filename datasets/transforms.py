"""Classification augmentation pipelines built from albumentations, reseedable per sample.

The train / val recipes are the standard ImageNet ones (torchvision reference scripts, timm):
``RandomResizedCrop`` + horizontal flip + colour jitter for training; resize the shorter side to
``image_size / 0.875`` and centre-crop for evaluation (the 224 <- 256 convention).

Reproducibility: :class:`AlbumentationsTransform` exposes ``set_random_seed(seed)``, which
:class:`~resvision.datasets.classification.ClassificationDataset` calls before every sample with a
seed derived from ``(dataset seed, epoch, index)``. Augmentations therefore do not depend on the
number of DataLoader workers, on which worker got a sample, or on where a run was resumed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

# albumentations asks PyPI for a newer version on every import (every spawned DataLoader worker too);
# resvision runs offline and must not phone home. An explicit user setting still wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402 - must follow the environment default above
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AlbumentationsTransform",
    "SeedableTransform",
    "classification_transforms",
    "face_transforms",
]

# Per-channel RGB statistics of ImageNet-1k train, in 0..1 units: what torchvision / timm weights expect.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Evaluation resize ratio: shorter side = image_size / 0.875 (256 for 224), torchvision/timm default.
DEFAULT_CROP_PCT = 0.875


class SeededAugmentation:
    """Mixin for datasets whose augmentation is a pure function of ``(seed, epoch, index)``: results
    do not depend on the number of DataLoader workers or on where training was resumed. The dataset
    sets ``self.seed``, ``self.epoch`` and ``self.transform``; call :meth:`set_epoch` before each
    epoch's iterator (workers copy the dataset when the iterator starts)."""

    seed: int = 0
    epoch: int = 0
    transform: object = None

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.epoch = int(epoch)

    def sample_seed(self, index: int) -> int:
        """The 32-bit augmentation seed of sample ``index`` in the current epoch.

        ``SeedSequence`` hashes the triple, so neighbouring indices / epochs get unrelated streams.
        """
        return int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])

    def reseed(self, index: int) -> None:
        """Seed the transform (if it has ``set_random_seed``) for sample ``index``."""
        set_seed = getattr(self.transform, "set_random_seed", None)
        if set_seed is not None:
            set_seed(self.sample_seed(index))


@runtime_checkable
class SeedableTransform(Protocol):
    """An image transform whose randomness can be fixed before each call."""

    def __call__(self, image: np.ndarray) -> torch.Tensor: ...

    def set_random_seed(self, seed: int | None) -> None: ...


class AlbumentationsTransform:
    """Wrap an ``A.Compose`` as ``image (H, W, 3) uint8 -> tensor (3, H', W') float32``.

    Picklable (DataLoader workers receive a copy) and reseedable per sample.

    Args:
        pipeline: An albumentations pipeline whose last step is ``ToTensorV2``.
    """

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Apply the pipeline to one ``(H, W, 3)`` uint8 RGB image."""
        return self.pipeline(image=image)["image"]

    def set_random_seed(self, seed: int | None) -> None:
        """Fix the randomness of the next call(s); ``None`` returns to fresh OS entropy.

        ``A.Compose.set_random_seed`` hands the *same* seed to every child transform, so the
        children draw identical random streams: the crop's area scale and the brightness factor
        would then be perfectly correlated (both are the first ``uniform`` draw). Each child gets
        its own independent seed instead, spawned from ``seed`` with ``np.random.SeedSequence``.
        """
        self.pipeline.set_random_seed(seed)
        if seed is None:
            return
        children = np.random.SeedSequence(seed).spawn(len(self.pipeline.transforms))
        for transform, child in zip(self.pipeline.transforms, children, strict=True):
            transform.set_random_seed(int(child.generate_state(1)[0]))

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.pipeline.transforms)
        return f"{type(self).__name__}([{names}])"


def classification_transforms(
    train: bool,
    image_size: int,
    resize: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    hflip: float = 0.5,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    color_jitter: float = 0.4,
) -> AlbumentationsTransform:
    """Build the standard ImageNet-style train or evaluation pipeline.

    Train: ``RandomResizedCrop(image_size, scale, ratio)`` -> ``HorizontalFlip(p=hflip)`` ->
    ``ColorJitter(brightness=contrast=saturation=color_jitter, hue=0)`` (only when
    ``color_jitter > 0``; always applied, as torchvision's ``ColorJitter``) -> ``Normalize`` -> tensor.

    Val: shorter side resized to ``resize`` (default ``round(image_size / 0.875)``) ->
    ``CenterCrop(image_size)`` -> ``Normalize`` -> tensor.

    Any input size works, including images smaller than ``image_size`` (e.g. 8x8 digits), which
    are upsampled. Downscaling uses ``cv2.INTER_AREA`` (anti-aliased, close to Pillow's
    ``antialias=True`` resize that pretrained weights were evaluated with); upscaling is bilinear.

    Args:
        train: Training (random) or evaluation (deterministic) pipeline.
        image_size: Output side ``S`` in pixels.
        resize: Evaluation only: shorter-side length before the centre crop; must be >= ``image_size``.
        mean: Per-channel RGB mean in 0..1 units.
        std: Per-channel RGB standard deviation in 0..1 units.
        hflip: Probability of a horizontal flip (set 0 for digits / text, which are not mirror-symmetric).
        scale: Range of the crop area as a fraction of the image area.
        ratio: Range of the crop aspect ratio (width / height).
        color_jitter: Strength ``j`` of brightness / contrast / saturation jitter (factors in ``[1-j, 1+j]``).

    Returns:
        Callable mapping ``(H, W, 3)`` uint8 RGB to a ``(3, S, S)`` float32 tensor.

    Raises:
        ValueError: ``image_size`` < 1 or ``resize`` < ``image_size``.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    steps = _train_steps(image_size, hflip, scale, ratio, color_jitter) if train else _val_steps(image_size, resize)
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    # seed=0 only makes a never-reseeded pipeline reproducible; datasets reseed it per sample anyway.
    return AlbumentationsTransform(A.Compose(steps, seed=0))


def _train_steps(
    image_size: int,
    hflip: float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    color_jitter: float,
) -> list[A.BasicTransform]:
    steps: list[A.BasicTransform] = [
        A.RandomResizedCrop(
            size=(image_size, image_size),
            scale=tuple(scale),
            ratio=tuple(ratio),
            interpolation=cv2.INTER_LINEAR,
            area_for_downscale="image",
        ),
    ]
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if color_jitter > 0:
        j = float(color_jitter)
        steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=1.0))
    return steps


def _val_steps(image_size: int, resize: int | None) -> list[A.BasicTransform]:
    resize = round(image_size / DEFAULT_CROP_PCT) if resize is None else resize
    if resize < image_size:
        raise ValueError(f"resize ({resize}) must be >= image_size ({image_size}) for the centre crop")
    return [
        A.SmallestMaxSize(max_size=resize, interpolation=cv2.INTER_LINEAR, area_for_downscale="image"),
        A.CenterCrop(height=image_size, width=image_size),
    ]


def face_transforms(
    train: bool,
    image_size: int,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    hflip: float = 0.5,
    color_jitter: float = 0.2,
) -> AlbumentationsTransform:
    """Pipeline for aligned face crops: resize to ``image_size`` x ``image_size`` (aspect not kept: an aligned
    crop is already square), then for training a horizontal flip and colour jitter; ``Normalize`` -> tensor.

    No random crop or scale: alignment put the eyes and mouth at fixed places and the face model's
    embedding head relies on that (insightface trains with flips only). Defaults normalise as insightface,
    ``(x - 127.5) / 127.5``.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    steps: list[A.BasicTransform] = [A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR, area_for_downscale="image")]
    if train and hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if train and color_jitter > 0:
        j = float(color_jitter)
        steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=1.0))
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]
    return AlbumentationsTransform(A.Compose(steps, seed=0))
