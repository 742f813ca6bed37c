"""Segmentation's prediction part: the result object (the class of every pixel of one image), ``overlay`` and
:class:`SegmentationPrediction`, the task's ``predict``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ...datasets import as_rgb, image_label, write_mask
from ..options import BUILTIN_PREDICT_OPTIONS
from ..result import Result

if TYPE_CHECKING:
    from .task import SegmentationDataInfo


class SegmentationResult(Result):
    """``r.mask`` (also ``r["mask"]``): the ``(H, W)`` class indices at the image's own size; ``r["pixels"]``: the
    fraction of the image each class covers; ``r.names``: the classes present. :meth:`save` writes the mask as a
    palette PNG (readable as a mask by every adapter) beside the overlay."""

    array_keys = ("mask",)
    picture = "overlay"

    def __init__(self, record, source, classes, palette: np.ndarray) -> None:
        super().__init__(record, source)
        self.classes, self.palette = classes, palette

    @property
    def mask(self) -> np.ndarray:
        return self["mask"]

    @property
    def names(self) -> list[str]:
        return list(self["pixels"])

    def plot(self) -> np.ndarray:
        return overlay(self.rgb(), self.mask, self.palette)

    def save(self, out_dir: str | Path, stem: str | None = None) -> list[Path]:
        mask_path = Path(out_dir) / f"{stem or self.stem}_mask.png"
        pictures = super().save(out_dir, stem)
        write_mask(mask_path, self.mask, self.palette)
        return [mask_path, *pictures]


def overlay(rgb: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """``rgb`` with every non-background pixel (mask value != 0) blended with its class colour."""
    colours = palette[np.clip(mask, 0, 255).astype(np.int64)]
    blend = rgb.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha
    out = np.where((mask != 0)[..., None], blend, rgb.astype(np.float32))
    return out.round().astype(np.uint8)


def segmentation_result(mask: np.ndarray, source: Any, index: int, data: SegmentationDataInfo,
                        palette: np.ndarray) -> SegmentationResult:
    """The result of one image from its predicted ``(H, W)`` class mask."""
    counts = np.bincount(mask.reshape(-1), minlength=len(data.classes))
    pixels = {name: round(float(c) / mask.size, 4) for name, c in zip(data.classes, counts) if c}
    return SegmentationResult({"image": image_label(source, index), "height": int(mask.shape[0]),
                               "width": int(mask.shape[1]), "pixels": pixels, "mask": mask},
                              source, data.classes, palette)


class SegmentationPrediction:
    """Segmentation's prediction members, mixed into ``SegmentationTask``; uses the core's ``transforms`` and
    ``logits`` (evaluation runs the model the same way). ``write_predictions`` is ``Task``'s (each result saves its
    mask)."""

    predict_options = BUILTIN_PREDICT_OPTIONS["segmentation"]

    @torch.inference_mode()
    def predict(self, model: nn.Module, paths: list[Any], data: SegmentationDataInfo,
                device: torch.device) -> list[dict[str, Any]]:
        """Per image (a file, or any image ``datasets.as_rgb`` takes): a ``SegmentationResult`` ``{"image", "height",
        "width", "pixels": {class: fraction of the image}, "mask"}``, where ``mask`` is the ``(H, W)`` array of class
        indices at the image's own size (``save`` writes it as a palette PNG beside the overlay)."""
        transform = self.transforms(False)
        palette = data.palette()
        results = []
        for index, path in enumerate(paths):
            rgb = as_rgb(path)
            tensor, _ = transform(rgb, np.zeros(rgb.shape[:2], dtype=np.uint8))
            mask = self.logits(model, tensor[None].to(device)).argmax(1)[0].cpu().numpy()
            results.append(segmentation_result(mask, path, index, data, palette))
        return results
