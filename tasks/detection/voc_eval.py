"""PASCAL VOC detection AP at IoU 0.5, written from the VOC devkit's ``VOCevaldet.m``.

Definitions (Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010, §4.2;
devkit ``VOCevaldet.m`` of VOC2007 and VOC2010-2012):

* Per class, detections are sorted by score, highest first (stable: ties keep the input order,
  as MATLAB's ``sort`` does).
* Each detection is compared with every ground-truth box of its class in its image, *including*
  difficult ones; let ``j`` be the box of largest IoU (the first one on ties). If IoU >= 0.5
  (``>=``, as in the devkit; py-faster-rcnn and Detectron2 use ``>``):

  - ``j`` is difficult (or a COCO crowd region, which we treat the same way) -> the detection is
    ignored: neither TP nor FP;
  - ``j`` is not yet matched -> TP, and ``j`` becomes matched;
  - ``j`` is already matched -> FP (duplicate), even if another unmatched box overlaps >= 0.5.

  Otherwise -> FP. Difficult boxes never count in the number of positives ``npos``.
* ``recall = cumTP / npos`` and ``precision = cumTP / (cumTP + cumFP)`` after each non-ignored
  detection. (The devkit keeps ignored detections as zero steps; they repeat the previous point, so
  dropping them changes neither AP.)
* VOC2007 AP: 11-point interpolation, the mean over ``t in {0, 0.1, ..., 1}`` of the largest
  precision at recall >= t (0 if none). Thresholds are the doubles nearest to k/10; the devkit's
  ``0:0.1:1`` and ``np.arange(0, 1.1, 0.1)`` produce 0.30000000000000004 and so miss a recall of
  exactly 3/10 - we follow the definition, not that rounding accident.
* VOC2010+ AP: area under the precision envelope (precision made monotonically non-increasing
  from the right) summed over the recall values where recall changes.

Box convention: boxes are continuous ``x1, y1, x2, y2`` (torchvision / COCO), so IoU has no
"+1". The devkit measures integer pixel boxes inclusively (``w = x2 - x1 + 1``); with the usual
conversion to continuous coordinates (``x1 - 1``, ``y1 - 1`` on the 1-based VOC corners, as
Detectron2 and MMDetection do) both give the same IoU. ``pixel_offset=1`` reproduces the devkit
formula on boxes kept in devkit coordinates.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

VOC_IOU_THRESHOLD = 0.5


@dataclass
class VocClassResult:
    """VOC scoring of one class.

    Attributes:
        label: the class label (category id) scored.
        num_gt: ground-truth boxes that count as positives (not difficult / crowd).
        num_ignored: difficult or crowd boxes (matched detections are ignored).
        num_detections: detections of this class, ignored ones included.
        scores, recall, precision: (D,) after each non-ignored detection, scores descending.
        ap07: 11-point AP (VOC2007); NaN when ``num_gt == 0``.
        ap12: area AP (VOC2010+); NaN when ``num_gt == 0``.
    """

    label: int
    num_gt: int
    num_ignored: int
    num_detections: int
    scores: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    ap07: float
    ap12: float


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """IoU of every pair. Args: boxes1 (N, 4), boxes2 (M, 4) as x1, y1, x2, y2; ``pixel_offset``
    is added to widths and heights (1 = devkit inclusive pixels). Returns (N, M)."""
    a = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + pixel_offset
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + pixel_offset
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0] + pixel_offset) * (a[:, 3] - a[:, 1] + pixel_offset)
    area_b = (b[:, 2] - b[:, 0] + pixel_offset) * (b[:, 3] - b[:, 1] + pixel_offset)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float64).tiny)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """AP from a precision/recall sequence (one point per detection, scores descending).

    Args:
        recall: (D,) cumulative recall, non-decreasing.
        precision: (D,) cumulative precision.
        use_07_metric: True -> VOC2007 11-point interpolation; False -> VOC2010+ area.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        for t in np.arange(11) / 10.0:  # exact tenths, see the module docstring
            above = precision[recall >= t]
            total += float(above.max()) if above.size else 0.0
        return total / 11.0
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # envelope: max precision at any recall >= r
    change = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[change] - mrec[change - 1]) * mpre[change]))


def _index_ground_truth(gt_by_image: Mapping[int, Mapping[str, np.ndarray]]):
    """{(image, label): (boxes (M, 4), ignore (M,))} and per-label counts of positives / ignored."""
    index: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    npos: dict[int, int] = defaultdict(int)
    nign: dict[int, int] = defaultdict(int)
    for image_id, gt in gt_by_image.items():
        boxes = np.asarray(gt["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(gt["labels"]).reshape(-1)
        ignore = np.asarray(gt.get("ignore", np.zeros(len(labels), bool)), dtype=bool).reshape(-1)
        for label in np.unique(labels):
            m = labels == label
            index[(image_id, int(label))] = (boxes[m], ignore[m])
            npos[int(label)] += int((~ignore[m]).sum())
            nign[int(label)] += int(ignore[m].sum())
    return index, npos, nign


def _score_class(label, det_images, det_boxes, det_scores, gt_index, npos, nign, iou_threshold, pixel_offset):
    order = np.argsort(-det_scores, kind="stable")
    det_images, det_boxes, det_scores = det_images[order], det_boxes[order], det_scores[order]
    n = len(det_scores)
    # Best-overlap GT per detection does not depend on the matching order: compute it per image.
    best_iou = np.full(n, -np.inf)
    best_gt = np.full(n, -1)
    by_image: dict[int, list[int]] = defaultdict(list)
    for k, image_id in enumerate(det_images.tolist()):
        by_image[image_id].append(k)
    for image_id, rows in by_image.items():
        gt = gt_index.get((image_id, label))
        if gt is not None and len(gt[0]):
            ious = box_iou(det_boxes[rows], gt[0], pixel_offset)
            best_gt[rows] = ious.argmax(axis=1)
            best_iou[rows] = ious.max(axis=1)
    tp = np.zeros(n, dtype=bool)
    kept = np.ones(n, dtype=bool)
    matched: dict[int, np.ndarray] = {}
    for k in range(n):  # the greedy, order-dependent part
        if best_iou[k] < iou_threshold:
            continue  # FP
        boxes, ignore = gt_index[(int(det_images[k]), label)]
        j = best_gt[k]
        if ignore[j]:
            kept[k] = False
            continue
        taken = matched.setdefault(int(det_images[k]), np.zeros(len(boxes), dtype=bool))
        if not taken[j]:
            tp[k] = taken[j] = True  # else duplicate -> FP
    tp_cum = np.cumsum(tp[kept])
    fp_cum = np.cumsum(~tp[kept])
    num_gt = npos.get(label, 0)
    recall = tp_cum / num_gt if num_gt else np.zeros(len(tp_cum))
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1)
    ap07 = voc_ap(recall, precision, True) if num_gt else float("nan")
    ap12 = voc_ap(recall, precision, False) if num_gt else float("nan")
    return VocClassResult(label, num_gt, nign.get(label, 0), n, det_scores[kept], recall, precision, ap07, ap12)


def voc_evaluate(
    gt_by_image: Mapping[int, Mapping[str, np.ndarray]],
    detections: Mapping[str, np.ndarray],
    classes: Iterable[int],
    iou_threshold: float = VOC_IOU_THRESHOLD,
    pixel_offset: float = 0.0,
) -> dict[int, VocClassResult]:
    """Score detections with the VOC rules (module docstring), class by class.

    Args:
        gt_by_image: image id -> {"boxes": (M, 4) x1y1x2y2, "labels": (M,) int, "ignore": (M,) bool
            (difficult or crowd)}. Every evaluated image should be present, even with M = 0;
            detections on an absent image are false positives.
        detections: {"image_ids": (N,) int, "boxes": (N, 4) x1y1x2y2, "scores": (N,), "labels": (N,) int}.
        classes: the labels to score (e.g. COCO category ids; need not be contiguous).
        iou_threshold: minimum IoU for a match (0.5 in VOC).
        pixel_offset: 0 for continuous boxes, 1 for the devkit's inclusive integer pixels.

    Returns:
        label -> :class:`VocClassResult`, in the order of ``classes``.
    """
    gt_index, npos, nign = _index_ground_truth(gt_by_image)
    image_ids = np.asarray(detections["image_ids"], dtype=np.int64).reshape(-1)
    boxes = np.asarray(detections["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(detections["scores"], dtype=np.float64).reshape(-1)
    labels = np.asarray(detections["labels"], dtype=np.int64).reshape(-1)
    out = {}
    for label in classes:
        m = labels == label
        out[int(label)] = _score_class(int(label), image_ids[m], boxes[m], scores[m], gt_index, npos, nign,
                                       iou_threshold, pixel_offset)
    return out


def mean_ap(per_class: Mapping[int, VocClassResult], use_07_metric: bool) -> float:
    """Mean AP over the classes with at least one positive (0.0 when there is none)."""
    aps = [(r.ap07 if use_07_metric else r.ap12) for r in per_class.values() if r.num_gt > 0]
    return float(np.mean(aps)) if aps else 0.0
