"""Detection's prediction part: the result object (the boxes found in one image), ``draw_boxes`` and
:class:`DetectionPrediction`, the task's ``predict`` / ``write_predictions``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ...datasets import as_rgb, image_label
from ..options import BUILTIN_PREDICT_OPTIONS
from ..result import Result

if TYPE_CHECKING:
    from .task import DetectionDataInfo


class DetectionResult(Result):
    """``r["detections"]``: ``[{"label", "category_id", "score", "box"}]``; as arrays: ``r.boxes`` ``(N, 4)`` x1, y1,
    x2, y2 in the pixels of the image as given, ``r.scores`` ``(N,)``, ``r.labels`` ``(N,)`` class indices (into the
    predictor's ``classes``), ``r.names`` the class names."""

    picture = "boxes"

    def __init__(self, record, source, classes) -> None:
        super().__init__(record, source)
        self.classes = classes

    @property
    def boxes(self) -> np.ndarray:
        return np.array([d["box"] for d in self["detections"]], dtype=np.float32).reshape(-1, 4)

    @property
    def scores(self) -> np.ndarray:
        return np.array([d["score"] for d in self["detections"]], dtype=np.float32)

    @property
    def names(self) -> list[str]:
        return [d["label"] for d in self["detections"]]

    @property
    def labels(self) -> np.ndarray:
        return np.array([self.classes.index(d["label"]) for d in self["detections"]], dtype=np.int64)

    def plot(self) -> np.ndarray:
        """The boxes with their class and score, on the image enlarged to at least 640 pixels wide (the captions
        stay readable on small images)."""
        rgb = self.rgb()
        scale = max(1, -(-640 // rgb.shape[1]))
        rgb = rgb.repeat(scale, 0).repeat(scale, 1)
        return draw_boxes(rgb, np.zeros((0, 4)), self.boxes * scale,
                          [f"{d['label']} {d['score']:.2f}" for d in self["detections"]])


def draw_boxes(rgb: np.ndarray, truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> np.ndarray:
    """Ground truth in green, predictions in red with their captions, via torchvision's drawing utility."""
    from torchvision.utils import draw_bounding_boxes

    image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)  # a writable copy
    if len(truth):
        image = draw_bounding_boxes(image, torch.as_tensor(truth, dtype=torch.float).reshape(-1, 4), colors="lime", width=1)
    if len(predicted):
        image = draw_bounding_boxes(image, torch.as_tensor(predicted, dtype=torch.float).reshape(-1, 4), labels=names,
                                    colors="red", width=2)
    return image.permute(1, 2, 0).numpy()


def image_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> the ``(3, H, W)`` float image in ``[0, 1]`` the detector takes."""
    return torch.tensor(rgb).permute(2, 0, 1).float().div(255).to(device)


def detection_result(output: dict[str, torch.Tensor], source: Any, index: int, data: DetectionDataInfo,
                     score_thresh: float) -> DetectionResult:
    """The result of one image from the detector's output for it (boxes in the image's pixels)."""
    keep = output["scores"] >= score_thresh
    boxes, scores, labels = output["boxes"][keep].cpu(), output["scores"][keep].cpu(), output["labels"][keep].cpu()
    dets = [{"label": data.classes[int(k) - 1], "category_id": data.category_ids[int(k) - 1],
             "score": round(float(s), 4), "box": [round(float(v), 2) for v in b]}
            for b, s, k in zip(boxes, scores, labels)]
    return DetectionResult({"image": image_label(source, index), "detections": dets}, source, data.classes)


class DetectionPrediction:
    """Detection's prediction members, mixed into ``DetectionTask`` (before ``Task``, whose ``write_predictions`` it
    extends)."""

    predict_options = BUILTIN_PREDICT_OPTIONS["detection"]

    @torch.inference_mode()
    def predict(self, model: nn.Module, paths: list[Any], data: DetectionDataInfo, device: torch.device,
                score_thresh: float = 0.5) -> list[dict[str, Any]]:
        """Detections per image (a file, or any image ``datasets.as_rgb`` takes): a ``DetectionResult``
        ``{"image", "detections": [{"label", "category_id", "score", "box": [x1, y1, x2, y2] pixels of the image as
        given}]}`` (``.boxes``, ``.scores``, ``.labels``, ``.names``)."""
        return [detection_result(model([image_tensor(as_rgb(path), device)])[0], path, index, data, score_thresh)
                for index, path in enumerate(paths)]

    def write_predictions(self, results: list[dict[str, Any]], out_dir: Path, data: DetectionDataInfo) -> list[Path]:
        """predictions.json, one ``<image>_boxes.png`` per image with its boxes drawn and ``results_coco.json``
        (COCO results format, image_id = input order)."""
        written = super().write_predictions(results, out_dir, data)
        coco = [{"image_id": image_id, "category_id": d["category_id"], "score": d["score"],
                 "bbox": [d["box"][0], d["box"][1], d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]]}
                for image_id, r in enumerate(results) for d in r["detections"]]
        (out_dir / "results_coco.json").write_text(json.dumps(coco))
        return [*written, out_dir / "results_coco.json"]
