"""An exported segmentation graph run by ONNX Runtime, called the way the task calls its torch model."""

from __future__ import annotations

import torch

from ...deploy.runtime import OnnxModel, OnnxRunner
from .model import pad_to_multiple

__all__ = ["OnnxSegmenter"]


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
