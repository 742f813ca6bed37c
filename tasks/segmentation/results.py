"""Segmentation's result object: the class of every pixel of one image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...datasets import write_mask
from ..result import Result


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
