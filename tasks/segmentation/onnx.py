"""Segmentation's export part: :class:`SegmentationExport` (what ``resvision export`` traces: ``forward_padded``,
and how the file is checked) and :class:`OnnxSegmenter`, an exported segmentation graph run by ONNX Runtime, called
the way the task calls its torch model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...datasets import IMAGENET_MEAN, IMAGENET_STD
from ...deploy.runtime import OnnxModel, OnnxRunner
from .model import pad_to_multiple

__all__ = ["OnnxSegmenter", "SegmentationExport"]


class SegmentationExport:
    """Segmentation's export members, mixed into ``SegmentationTask``: logits (or the argmax mask with
    ``--postprocess argmax``) of images padded to the model's ``pad_to``, free height and width."""

    onnx_postprocess = ("none", "argmax")
    onnx_parity_limits = {"argmax_agreement": (">=", 0.999)}
    onnx_dynamic_axes = {2: "height", 3: "width"}

    def onnx_output_names(self, postprocess: str = "none") -> tuple[str, ...]:
        return ("mask",) if postprocess == "argmax" else ("logits",)

    def export_module(self, model: nn.Module, postprocess: str = "none") -> nn.Module:
        return _PaddedForward(model, argmax=postprocess == "argmax")

    def export_examples(self, batch: Any, model: nn.Module) -> list[tuple[torch.Tensor, ...]]:
        return [(pad_to_multiple(batch.images, model.pad_to),)]

    def onnx_model(self, runner) -> nn.Module:
        return OnnxSegmenter(runner, runner.info["preprocessing"]["pad_to"])

    def parity(self, reference: dict[str, torch.Tensor], exported: dict[str, torch.Tensor]) -> dict[str, float]:
        if "mask" in reference:
            return {"argmax_agreement": float((reference["mask"] == exported["mask"]).float().mean())}
        ref, got = reference["logits"].float(), exported["logits"].float()
        return {"argmax_agreement": float((ref.argmax(1) == got.argmax(1)).float().mean()),
                "max_abs_diff": float((ref - got).abs().max())}

    def preprocessing(self, model: nn.Module) -> dict[str, Any]:
        i = self.cfg.model.inference
        return {"input": "RGB, float32, NCHW, pixel values / 255, then (x - mean) / std per channel; pad bottom / "
                         f"right with 0 to a multiple of {model.pad_to} and crop the output back",
                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "pad_to": model.pad_to,
                "inference": {"mode": i.mode, "window": i.window, "stride": i.stride, "flip": i.flip}}


class _PaddedForward(nn.Module):
    """What segmentation exports: logits (or the argmax mask) of images padded to the model's ``pad_to``."""

    def __init__(self, model: nn.Module, argmax: bool = False) -> None:
        super().__init__()
        self.model, self.argmax = model, argmax

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model.forward_padded(images)
        return logits.argmax(1) if self.argmax else logits


class OnnxSegmenter(OnnxModel):
    """An exported segmentation graph (inputs a multiple of ``pad_to``) called like the torch model: pads the
    image bottom / right with zeros to that multiple and crops the logits back, as the model's own forward.
    (The export traces ``forward_padded``: the TorchScript tracer would freeze the padding to the traced size.)"""

    def __init__(self, runner: OnnxRunner, pad_to: int) -> None:
        super().__init__(runner)
        self.pad_to = pad_to

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        return super().forward(pad_to_multiple(images, self.pad_to))[..., :h, :w]
