"""Face's export part: :class:`FaceExport`, what ``resvision export`` traces (the normalised and the raw embedding)
and how the file is checked. The exported file runs as ``deploy.runtime.OnnxModel`` reading its raw embedding."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import UserError

__all__ = ["FaceExport"]


class FaceExport:
    """Face's export members, mixed into ``FaceTask`` (before ``Task``, whose ``preprocessing`` it extends): a
    fixed-size graph with outputs ``(embedding, raw_embedding)``, checked by cosine similarity."""

    onnx_parity_limits = {"min_cosine": (">=", 0.9999)}

    def onnx_output_names(self, postprocess: str = "none") -> tuple[str, ...]:
        # embedding: L2-normalised, what a consumer compares; raw_embedding: before normalisation, what the
        # LFW protocol sums over the image and its mirror (eval and predict with the ONNX Runtime engine)
        return ("embedding", "raw_embedding")

    def export_module(self, model: nn.Module, postprocess: str = "none") -> nn.Module:
        return _NormalisedEmbedding(model)

    def onnx_model(self, runner) -> nn.Module:
        from ...deploy.runtime import OnnxModel

        return OnnxModel(runner, output="raw_embedding")

    def parity(self, reference: dict[str, torch.Tensor], exported: dict[str, torch.Tensor]) -> dict[str, float]:
        cosine = min(float(F.cosine_similarity(reference[k].float(), exported[k].float(), dim=1).min()) for k in reference)
        return {"min_cosine": cosine}

    def set_export_size(self, size: tuple[int, int]) -> None:
        side = self.cfg.data.image_size
        if tuple(size) != (side, side):
            raise UserError(f"--image-size {size[0]} {size[1]}: a face model's input size is fixed at {side}x{side} "
                            "(data.image_size: its embedding layer reads the final feature map whole)")

    def preprocessing(self, model: nn.Module) -> dict[str, Any]:
        return {**super().preprocessing(model), "aligned": "faces aligned to the ArcFace 112x112 template "
                "(tools/align_faces.py) and resized to image_size" if self.cfg.data.align else "as in training"}


class _NormalisedEmbedding(nn.Module):
    """What face exports: ``(L2-normalised embedding, raw embedding)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.model(images)
        return F.normalize(raw.float(), dim=1), raw
