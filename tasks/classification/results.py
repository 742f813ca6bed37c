"""Classification's prediction part: the result object (the top-k classes of one image) and
:class:`ClassificationPrediction`, the task's ``predict`` / ``write_predictions``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ...datasets import as_rgb, image_label
from ..options import BUILTIN_PREDICT_OPTIONS
from ..result import Result

if TYPE_CHECKING:
    from ..base import DataInfo


class ClassificationResult(Result):
    """``r["topk"]``: ``[{"label", "index", "prob"}]``, best first; ``r.label`` / ``r.score`` (the best class and
    its probability), ``r.top5`` (``(label, prob)`` pairs), ``r.probs`` (every class's probability)."""

    picture = "label"

    def __init__(self, record: dict[str, Any], source: Any, probs: np.ndarray) -> None:
        super().__init__(record, source)
        self.probs = probs

    @property
    def label(self) -> str:
        return self["topk"][0]["label"]

    @property
    def score(self) -> float:
        return self["topk"][0]["prob"]

    @property
    def index(self) -> int:
        return self["topk"][0]["index"]

    @property
    def top5(self) -> list[tuple[str, float]]:
        return [(t["label"], t["prob"]) for t in self["topk"][:5]]

    def caption(self) -> list[str]:
        return [", ".join(f"{label} {prob:.2f}" for label, prob in self.top5[:3])]


class ClassificationPrediction:
    """Classification's prediction members, mixed into ``ClassificationTask`` (before ``Task``, whose
    ``write_predictions`` it extends); uses the core's ``transforms``."""

    predict_options = BUILTIN_PREDICT_OPTIONS["classification"]

    @torch.inference_mode()
    def predict(self, model: nn.Module, paths: list[Any], data: DataInfo, device: torch.device, topk: int = 5,
                batch_size: int = 32) -> list[dict[str, Any]]:
        """Top-k classes for each image (a file, or any image ``datasets.as_rgb`` takes):
        ``ClassificationResult`` ``{"image", "topk": [{"label", "index", "prob"}]}`` (``.label``, ``.score``, ``.top5``,
        ``.probs``)."""
        transform = self.transforms(False)
        names = data.classes
        results = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images = torch.stack([transform(as_rgb(p)) for p in chunk]).to(device)
            probs = model(images).float().softmax(dim=1)
            top_p, top_c = probs.topk(min(topk, probs.shape[1]), dim=1)
            for i, (path, ps, cs, every) in enumerate(zip(chunk, top_p.tolist(), top_c.tolist(), probs.cpu().numpy()),
                                                      start):
                results.append(ClassificationResult({"image": image_label(path, i), "topk": [
                    {"label": names[c] if c < len(names) else str(c), "index": c, "prob": round(p, 6)} for p, c in zip(ps, cs)
                ]}, path, every))
        return results

    def write_predictions(self, results: list[dict[str, Any]], out_dir: Path, data: DataInfo) -> list[Path]:
        """predictions.json, a picture per image (its top classes above it) and predictions.csv (image, best label
        and probability, the top-k)."""
        written = super().write_predictions(results, out_dir, data)
        path = out_dir / "predictions.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "label", "prob", "topk"])
            for r in results:
                best = r["topk"][0]
                writer.writerow([r["image"], best["label"], best["prob"],
                                 ";".join(f"{t['label']}:{t['prob']:.4f}" for t in r["topk"])])
        return [*written, path]
