"""Classification's export part: :class:`ClassificationExport`, what ``resvision export`` traces and stores. The
exported file runs as the generic tensor-in / tensor-out ``deploy.runtime.OnnxModel`` (``Task.onnx_model``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ...datasets import DEFAULT_CROP_PCT

__all__ = ["ClassificationExport"]


class ClassificationExport:
    """Classification's export members, mixed into ``ClassificationTask`` (before ``Task``, whose
    ``preprocessing`` it extends): logits, or probabilities with ``--postprocess softmax``."""

    onnx_postprocess = ("none", "softmax")

    def onnx_output_names(self, postprocess: str = "none") -> tuple[str, ...]:
        return ("probs",) if postprocess == "softmax" else ("logits",)

    def export_module(self, model: nn.Module, postprocess: str = "none") -> nn.Module:
        return nn.Sequential(model, nn.Softmax(dim=1)) if postprocess == "softmax" else model

    def preprocessing(self, model: nn.Module) -> dict[str, Any]:
        """Evaluation's whole pipeline, spelled out for a consumer of the file that has none of this code."""
        d = self.cfg.data
        resize = d.resize if d.resize is not None else round(d.image_size / DEFAULT_CROP_PCT)
        return {**super().preprocessing(model), "resize": resize, "channel_order": "RGB (grey and palette images "
                "converted, alpha composited on white)",
                "steps": [f"resize so the shorter side is {resize} px: each side max(1, round(side * {resize} / shorter "
                          "side)), Python's round (half to even), with OpenCV cv2.resize, INTER_AREA when shrinking, "
                          "INTER_LINEAR otherwise",
                          f"centre crop {d.image_size} x {d.image_size} (top-left at floor((size - crop) / 2))",
                          "float32 / 255, then (x - mean) / std per channel", "HWC -> CHW, add the batch axis"]}
