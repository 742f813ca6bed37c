"""Semantic segmentation metrics from one pixel confusion matrix (MMSegmentation / torchvision reference).

The state is a single (C, C) int64 matrix, rows = ground truth, columns = prediction, summed over
every valid pixel (target != ``ignore_index``). Under DDP the matrices are summed across ranks; the
validation sampler shards without padding, so each pixel is counted once. Every metric is a
fraction in [0, 1]. A class absent from both prediction and ground truth (row sum + column sum == 0)
has no defined IoU and is left out of every mean; ``protocol.md`` in the report says so.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from ...engine import distributed as dist_utils  # noqa: E402
from ...errors import DataError  # noqa: E402
from ...reports import save_figure  # noqa: E402
from ..base import Evaluator  # noqa: E402

PROTOCOL = {
    "mIoU": "Mean over evaluated classes of IoU_c = TP_c / (TP_c + FP_c + FN_c) (intersection over union of "
            "the predicted and ground-truth pixels of class c); `IoU_<class>` are the per-class values.",
    "mDice": "Mean over evaluated classes of Dice_c = 2 TP_c / (2 TP_c + FP_c + FN_c) (the F1 score of class c).",
    "pixel_acc": "Correct pixels / valid pixels: trace of the confusion matrix / its total.",
    "mean_acc": "Mean over the classes with ground-truth pixels of the per-class recall TP_c / (TP_c + FN_c); a "
                "class that is only predicted has no recall and is left out.",
    "fwIoU": "Frequency-weighted IoU: sum over classes with ground-truth pixels of freq_c * IoU_c, "
             "freq_c = ground-truth pixels of c / valid pixels.",
    "num_pixels": "Valid pixels scored, summed over every image (and every rank under DDP, each pixel once).",
    "num_classes_evaluated": "Classes present in the prediction or the ground truth, the classes the means run over.",
}


class SegmentationEvaluator(Evaluator):
    """Accumulates a pixel confusion matrix and turns it into mIoU, Dice and accuracies.

    Args:
        class_names: display name of each class, in the order of the model's output channels.
        ignore_index: target value of pixels that are never scored (VOC boundaries: 255).
        inference: how the predictions were made (whole image / sliding window, flip), one sentence for
            protocol.md; the numbers depend on it.
    """

    def __init__(self, class_names: list[str], ignore_index: int = 255, inference: str = "") -> None:
        self.class_names = list(class_names)
        self.ignore_index = int(ignore_index)
        self.inference = inference
        super().__init__()

    def reset(self) -> None:
        n = len(self.class_names)
        # On the CPU whatever the model's device: a few KB, and gather() picks the backend's device.
        self.matrix = torch.zeros(n, n, dtype=torch.int64)

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch to the confusion matrix.

        Args:
            predictions: (N, H, W) int64 label maps, or (N, C, H, W) logits (argmax over C).
            targets: (N, H, W) integer masks in [0, C), or ``ignore_index``.

        Raises:
            DataError: a target value outside [0, C) that is not ``ignore_index``.
        """
        n = len(self.class_names)
        if predictions.dim() == 4:
            if predictions.shape[1] != n:
                raise ValueError(f"logits have {predictions.shape[1]} channels, expected {n} classes")
            predictions = predictions.argmax(dim=1)
        if predictions.shape != targets.shape or predictions.dim() != 3:
            raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} must both "
                             "be (N, H, W) (or logits (N, C, H, W))")
        targets = targets.long()
        valid = targets != self.ignore_index
        target, pred = targets[valid], predictions[valid].long()
        bad = (target < 0) | (target >= n)
        if bad.any():  # a wrong mask encoding (e.g. 0/255 binary masks), not a model problem
            values = torch.unique(target[bad]).tolist()
            raise DataError(f"target mask values {values[:20]} are outside [0, {n}) and are not the ignore index "
                            f"{self.ignore_index}")
        if pred.numel() and (pred.min() < 0 or pred.max() >= n):
            raise ValueError(f"predicted labels must lie in [0, {n}), got {pred.min().item()}..{pred.max().item()}")
        # Row-major index target * C + pred: bincount yields the flattened matrix in one pass.
        counts = torch.bincount(target * n + pred, minlength=n * n)
        self.matrix += counts.view(n, n).cpu()

    def gather(self) -> None:
        """Sum the matrices of every rank (no-op on one process)."""
        if not dist_utils.is_distributed():
            return
        # NCCL reduces CUDA tensors only; gloo reduces CPU tensors. Chosen by backend, not by where the
        # matrix lives, since a rank whose shard is empty never saw a device tensor.
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        matrix = self.matrix.to(device)
        dist.all_reduce(matrix, op=dist.ReduceOp.SUM)
        self.matrix = matrix.cpu()

    def per_class(self) -> dict[str, np.ndarray]:
        """Per-class arrays, each (C,): ``iou``, ``dice``, ``acc`` (NaN where undefined), ``gt`` and ``pred``
        pixel counts, ``tp`` and the boolean ``present`` (in the prediction or the ground truth)."""
        cm = self.matrix.double().numpy()
        tp, gt, pred = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
        present = gt + pred > 0
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> NaN marks undefined classes
            iou = np.where(present, tp / (gt + pred - tp), np.nan)
            dice = np.where(present, 2 * tp / (gt + pred), np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        return {"iou": iou, "dice": dice, "acc": acc, "gt": gt, "pred": pred, "tp": tp, "present": present}

    def metric_names(self) -> set[str]:
        return {"mIoU", "mDice", "pixel_acc", "mean_acc", "fwIoU", "num_pixels", "num_classes_evaluated",
                *(f"IoU_{name}" for name in self.class_names)}

    def compute(self) -> dict[str, float]:
        c = self.per_class()
        total = float(c["gt"].sum())
        present, has_gt = c["present"], c["gt"] > 0
        metrics = {"mIoU": 0.0, "mDice": 0.0, "pixel_acc": 0.0, "mean_acc": 0.0, "fwIoU": 0.0}
        if total > 0:  # total > 0 implies at least one class with ground truth: no empty means below
            metrics = {
                "mIoU": float(c["iou"][present].mean()),
                "mDice": float(c["dice"][present].mean()),
                "pixel_acc": float(c["tp"].sum() / total),
                "mean_acc": float(c["acc"][has_gt].mean()),
                "fwIoU": float((c["gt"][has_gt] / total * c["iou"][has_gt]).sum()),
            }
        for i, name in enumerate(self.class_names):
            if present[i]:  # absent classes have no IoU: left out rather than NaN (report.json stays valid JSON)
                metrics[f"IoU_{name}"] = float(c["iou"][i])
        metrics["num_pixels"] = total
        metrics["num_classes_evaluated"] = float(present.sum())
        return metrics

    def write_report(self, run_dir: str | Path) -> None:
        """per_class_iou.csv, confusion_matrix.csv, metrics.json, protocol.md, plots/per_class_iou.png."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        c, metrics = self.per_class(), self.compute()
        with open(run_dir / "per_class_iou.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "IoU", "Dice", "acc", "gt_pixels", "pred_pixels"])
            for i, name in enumerate(self.class_names):
                if c["present"][i]:
                    scores = [f"{c['iou'][i]:.4f}", f"{c['dice'][i]:.4f}",
                              "" if np.isnan(c["acc"][i]) else f"{c['acc'][i]:.4f}"]
                else:
                    scores = ["absent"] * 3
                writer.writerow([name, *scores, int(c["gt"][i]), int(c["pred"][i])])
        with open(run_dir / "confusion_matrix.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true\\predicted", *self.class_names])
            for name, row in zip(self.class_names, self.matrix.tolist()):
                writer.writerow([name, *row])
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (run_dir / "protocol.md").write_text(self._protocol_markdown(metrics))
        plot_per_class_iou(self.class_names, c["iou"], metrics["mIoU"], run_dir / "plots" / "per_class_iou.png")

    def _protocol_markdown(self, metrics: dict[str, float]) -> str:
        rule = (f"Pixels whose target is the ignore index {self.ignore_index} are not scored. Classes absent "
                "from both the prediction and the ground truth are excluded from the means; they have no "
                "`IoU_<class>` key in metrics.json and read \"absent\" in per_class_iou.csv.")
        lines = ["# Segmentation evaluation protocol", "",
                 "All metrics come from one confusion matrix (rows = ground truth, columns = prediction) summed "
                 "over every valid pixel of the evaluated images (across ranks under DDP, each pixel once). "
                 "Values are fractions in [0, 1].", ""]
        if self.inference:
            lines += [f"Predictions: {self.inference}", ""]
        for key, meaning in PROTOCOL.items():
            value = f"{int(metrics[key])}" if key.startswith("num_") else f"{metrics[key]:.4f}"
            lines += [f"**{key}** = {value}. {meaning} {rule}", ""]
        absent = [n for n, p in zip(self.class_names, self.per_class()["present"]) if not p]
        lines += [f"Absent classes: {', '.join(absent) if absent else 'none'}. An empty `acc` cell in "
                  "per_class_iou.csv marks a class that is predicted but has no ground-truth pixels.", ""]
        return "\n".join(lines)


def plot_per_class_iou(class_names: list[str], iou: np.ndarray, miou: float, path: str | Path) -> Path:
    """Horizontal bar chart of per-class IoU (``iou``: (C,), NaN = absent class, drawn without a bar)."""
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(6.5, min(1.5 + 0.28 * n, 40)))
    y = np.arange(n)
    ax.barh(y, np.nan_to_num(iou, nan=0.0), color="C0")
    labels = [f"{name} (absent)" if np.isnan(v) else name for name, v in zip(class_names, iou)]
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()  # first class on top, as in the CSV
    ax.axvline(miou, color="C3", ls="--", lw=1.2, label=f"mIoU {miou:.3f}")
    ax.set(xlim=(0, 1), xlabel="IoU", title="Per-class IoU")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, Path(path))
