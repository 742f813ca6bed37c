"""Classification metrics: top-1/top-5, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ...reports import plot_confusion_matrix
from ..base import Evaluator

TOPK = 5


class ClassificationEvaluator(Evaluator):
    """Keeps each sample's top-5 classes and probabilities (not full score vectors, so 1000-class
    validation sets stay small), its true label and its dataset index."""

    state_fields = ("topk_classes", "topk_probs", "labels", "indices")

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = list(class_names)
        super().__init__()

    def update(self, predictions: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Args: predictions (N, C) logits; targets (labels (N,), dataset indices (N,))."""
        probs = predictions.float().softmax(dim=1)
        k = min(TOPK, probs.shape[1])
        top_p, top_c = probs.topk(k, dim=1)
        labels, indices = targets
        self.topk_classes.extend(top_c.cpu().numpy())
        self.topk_probs.extend(top_p.cpu().numpy())
        self.labels.extend(labels.cpu().tolist())
        self.indices.extend(indices.cpu().tolist())

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(top-k classes (N, k), top-k probs (N, k), labels (N,), indices (N,)) sorted by index."""
        order = np.argsort(self.indices, kind="stable")
        return (np.asarray(self.topk_classes)[order], np.asarray(self.topk_probs)[order],
                np.asarray(self.labels)[order], np.asarray(self.indices)[order])

    def metric_names(self) -> set[str]:
        return {"top1", "top5", "precision_macro", "recall_macro", "f1_macro", "num_samples"}

    def compute(self) -> dict[str, float]:
        if not self.labels:
            return {"top1": 0.0, "top5": 0.0}
        classes, _, labels, _ = self.arrays()
        hits = classes == labels[:, None]
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, classes[:, 0], labels=range(len(self.class_names)), average="macro", zero_division=0
        )
        return {
            "top1": float(hits[:, 0].mean()),
            "top5": float(hits[:, :TOPK].any(axis=1).mean()),  # == top-k with k = #classes when < 5
            "precision_macro": float(precision),
            "recall_macro": float(recall),
            "f1_macro": float(f1),
            "num_samples": float(len(labels)),
        }

    def confusion(self) -> np.ndarray:
        classes, _, labels, _ = self.arrays()
        return confusion_matrix(labels, classes[:, 0], labels=range(len(self.class_names)))

    def write_report(self, run_dir: str | Path) -> None:
        """per_class.csv, confusion_matrix.csv, plots/confusion_matrix.png, metrics.json."""
        run_dir = Path(run_dir)
        if not self.labels:
            return
        classes, _, labels, _ = self.arrays()
        n = len(self.class_names)
        precision, recall, f1, support = precision_recall_fscore_support(
            labels, classes[:, 0], labels=range(n), zero_division=0
        )
        with open(run_dir / "per_class.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "precision", "recall", "f1", "support"])
            for i, name in enumerate(self.class_names):
                writer.writerow([name, f"{precision[i]:.4f}", f"{recall[i]:.4f}", f"{f1[i]:.4f}", int(support[i])])
        matrix = self.confusion()
        with open(run_dir / "confusion_matrix.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true\\predicted", *self.class_names])
            for name, row in zip(self.class_names, matrix):
                writer.writerow([name, *row.tolist()])
        plot_confusion_matrix(matrix, self.class_names, run_dir / "plots" / "confusion_matrix.png")
        (run_dir / "metrics.json").write_text(json.dumps(self.compute(), indent=2))
