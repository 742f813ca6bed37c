"""Detection's export part: :class:`DetectionExport` (what ``resvision export`` traces, ``OneImageDetector``, and
how the file is checked) and :class:`OnnxDetector`, an exported detector run by ONNX Runtime, called the way the
task calls its torch model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ...deploy.runtime import OnnxRunner

__all__ = ["DetectionExport", "OneImageDetector", "OnnxDetector"]


class DetectionExport:
    """Detection's export members, mixed into ``DetectionTask``: one ``(3, H, W)`` image per call (torchvision's ONNX
    path) with free height and width, outputs ``(boxes, labels, scores)``."""

    onnx_batched = False  # torchvision's ONNX path: one (3, H, W) image per call
    onnx_dynamic_axes = {1: "height", 2: "width"}
    onnx_parity_limits = {"label_agreement": (">=", 1.0), "max_box_diff_px": ("<=", 0.5), "max_score_diff": ("<=", 1e-3)}
    # INT8: the backbone + FPN, the RPN head's convolutions and the box head's two fc layers, where the time goes;
    # box decoding, NMS, RoIAlign and the class / box predictors stay float32 (docs/benchmarks.md, "INT8 detection")
    int8_scopes = ("/model/backbone/", "/model/rpn/head/", "/model/roi_heads/box_head/")
    int8_metrics = ("bbox_AP", "bbox_AP50")

    def onnx_output_names(self, postprocess: str = "none") -> tuple[str, ...]:
        return ("boxes", "labels", "scores")

    def export_module(self, model: nn.Module, postprocess: str = "none") -> nn.Module:
        return OneImageDetector(model)

    def export_examples(self, batch: Any, model: nn.Module) -> list[tuple[torch.Tensor, ...]]:
        return [(image,) for image in batch.images]

    def onnx_model(self, runner) -> nn.Module:
        return OnnxDetector(runner)

    def parity(self, reference: dict[str, torch.Tensor], exported: dict[str, torch.Tensor]) -> dict[str, float]:
        """Detections compared in order (both sorted by score): the fraction with the same label over the
        larger count, and the largest box / score difference among the common ones."""
        n_ref, n_got = len(reference["labels"]), len(exported["labels"])
        n = min(n_ref, n_got)
        same = int((reference["labels"][:n] == exported["labels"][:n]).sum())
        box = (reference["boxes"][:n].float() - exported["boxes"][:n].float()).abs()
        score = (reference["scores"][:n].float() - exported["scores"][:n].float()).abs()
        return {"label_agreement": same / max(n_ref, n_got, 1), "max_box_diff_px": float(box.max()) if n else 0.0,
                "max_score_diff": float(score.max()) if n else 0.0, "detections": float(n_ref)}

    def preprocessing(self, model: nn.Module) -> dict[str, Any]:
        t = model.transform
        return {"input": "one RGB image, float32, CHW, pixel values / 255; resizing (min_size / max_size) and mean / "
                         "std normalisation happen inside the graph", "min_size": list(t.min_size),
                "max_size": t.max_size, "mean": t.image_mean, "std": t.image_std,
                "outputs": "boxes (x1, y1, x2, y2 pixels of the input), labels (1-based class index), scores"}


class OneImageDetector(nn.Module):
    """What detection exports: torchvision's detector on one image, returning ``(boxes, labels, scores)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model([image])[0]
        return out["boxes"], out["labels"], out["scores"]


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
