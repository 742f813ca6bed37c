"""Detection's result object: the boxes found in one image."""

from __future__ import annotations

import numpy as np
import torch

from ..result import Result


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
