"""An exported detector run by ONNX Runtime, called the way the task calls its torch model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ...deploy.runtime import OnnxRunner

__all__ = ["OnnxDetector"]


class OnnxDetector(nn.Module):
    """An exported detector called like torchvision's: ``model([image, ...]) -> [{"boxes", "labels",
    "scores"}, ...]``. The graph takes one ``(3, H, W)`` image (torchvision's ONNX path), so images run one
    at a time."""

    def __init__(self, runner: OnnxRunner) -> None:
        super().__init__()
        self.runner = runner

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            out = self.runner.run(image)
            outputs.append({"boxes": torch.from_numpy(out["boxes"]), "labels": torch.from_numpy(out["labels"]),
                            "scores": torch.from_numpy(out["scores"])})
        return outputs
