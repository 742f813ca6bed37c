"""Detection metrics: the COCO protocol (pycocotools' COCOeval) and VOC AP50 (2007 and 2010+ rules).

Both protocols score the same COCO-format results against the same COCO-format ground truth, over
the images the evaluator saw (not every image in the ground truth, so a truncated validation set
is not charged for images it never ran on).

Protocol choices (also written to ``protocol.md`` in the report):

* COCO numbers are pycocotools' ``COCOeval(iouType="bbox")`` stats as fractions in [0, 1]:
  AP = mean over IoU 0.50:0.05:0.95, AP50, AP75, AP for small / medium / large objects (area in
  pixels < 32², < 96², >= 96²), AR with 100 detections per image. A stat whose area range has no
  ground truth is -1, as pycocotools reports it (also with no detections at all).
* VOC "difficult" boxes (annotation key ``"difficult": 1``) are ordinary ground truth for the COCO
  protocol: COCO has no "difficult" notion, and pycocotools can only ignore boxes as crowd regions,
  which it matches by intersection-over-detection-area rather than IoU. Keeping them (rather than
  dropping them) means a detection of a difficult object is a true positive, not a false positive.
* VOC numbers (:mod:`.voc_eval`): IoU >= 0.5, difficult and crowd boxes ignored (matches are
  neither TP nor FP, they do not count as positives), 11-point (2007) and area (2010+) AP, mean
  over the classes with at least one positive box.
* Boxes are continuous ``x, y, w, h`` in original-image pixels; VOC IoU has no "+1" (see
  :mod:`.voc_eval`).
* The model sees each validation image alone (batch 1, as torchvision's reference evaluates), so a
  detection never depends on which other images share a batch.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from ...errors import DataError  # noqa: E402
from ..base import Evaluator  # noqa: E402
from .voc_eval import VocClassResult, mean_ap, voc_evaluate  # noqa: E402

# pycocotools' stats vector: 0 AP, 1 AP50, 2 AP75, 3 APs, 4 APm, 5 APl, 6-8 AR@1/10/100, 9-11 AR s/m/l.
COCO_STATS = {"bbox_AP": 0, "bbox_AP50": 1, "bbox_AP75": 2, "bbox_APs": 3, "bbox_APm": 4, "bbox_APl": 5,
              "bbox_AR1": 6, "bbox_AR10": 7, "bbox_AR100": 8, "bbox_ARs": 9, "bbox_ARm": 10, "bbox_ARl": 11}
VOC_KEYS = ("voc07_mAP50", "voc12_mAP50")

PROTOCOL = {
    "bbox_AP": "COCO 2017 protocol (pycocotools COCOeval, iouType='bbox'): AP averaged over IoU 0.50:0.05:0.95, "
               "101-point interpolated precision, up to 100 detections per image; fractions in [0, 1]",
    "bbox_AP50": "COCO AP at IoU 0.50 (101-point interpolation; not the VOC rule)",
    "bbox_AP75": "COCO AP at IoU 0.75",
    "bbox_APs": "COCO AP for small objects (area < 32^2 px); -1 when no ground truth is small",
    "bbox_APm": "COCO AP for medium objects (32^2 <= area < 96^2 px); -1 when none",
    "bbox_APl": "COCO AP for large objects (area >= 96^2 px); -1 when none",
    "bbox_AR1": "COCO average recall with at most 1 detection per image, IoU 0.50:0.05:0.95",
    "bbox_AR10": "COCO average recall with at most 10 detections per image, IoU 0.50:0.05:0.95",
    "bbox_AR100": "COCO average recall with at most 100 detections per image, IoU 0.50:0.05:0.95",
    "bbox_ARs": "COCO AR@100 for small objects (area < 32^2 px); -1 when none",
    "bbox_ARm": "COCO AR@100 for medium objects (32^2 <= area < 96^2 px); -1 when none",
    "bbox_ARl": "COCO AR@100 for large objects (area >= 96^2 px); -1 when none",
    "voc07_mAP50": "PASCAL VOC2007 devkit rule: IoU >= 0.5, 11-point interpolated AP, mean over classes with "
                   "at least one non-difficult box; difficult and crowd boxes ignored",
    "voc12_mAP50": "PASCAL VOC2010-2012 devkit rule: IoU >= 0.5, area under the monotone precision envelope, "
                   "same matching and ignoring as voc07_mAP50",
    "difficult_boxes": "VOC 'difficult' boxes are ignored by the VOC metrics and are ordinary ground truth for "
                       "the COCO metrics (pycocotools can only ignore crowd regions, matched by IoA, not IoU)",
    "boxes": "continuous x1,y1,x2,y2 in original-image pixels; IoU without the devkit's +1",
    "images": "only the images passed to update() are scored",
}


@dataclass
class DetectionEvaluation:
    """Everything one evaluation produces: the flat metrics and what the report needs."""

    metrics: dict[str, float]
    voc: dict[int, VocClassResult]
    coco_per_class: dict[int, tuple[float, float]]  # category id -> (AP, AP50), NaN if undefined
    coco_summary: str


def _quiet():
    """pycocotools prints progress on stdout; capture it."""
    return contextlib.redirect_stdout(io.StringIO())


def _coco_from_dict(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def _gt_copy(coco_gt: dict) -> dict:
    """A copy pycocotools may mutate (COCOeval writes an "ignore" key into each annotation), with
    defaults for the keys it needs: area = w*h, iscrowd = 0, and fresh annotation ids."""
    anns = []
    for i, ann in enumerate(coco_gt.get("annotations", [])):
        ann = dict(ann)
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
        ann["id"] = i + 1
        anns.append(ann)
    return {**coco_gt, "annotations": anns, "images": list(coco_gt.get("images", [])),
            "categories": list(coco_gt.get("categories", []))}


def check_results(coco_gt: dict, results: list[dict]) -> None:
    """Raise :class:`DataError` if results name images or categories that the ground truth lacks."""
    image_ids = {img["id"] for img in coco_gt.get("images", [])}
    category_ids = {cat["id"] for cat in coco_gt.get("categories", [])}
    bad_images = sorted({r["image_id"] for r in results} - image_ids)
    if bad_images:
        raise DataError(f"{len(bad_images)} detection image id(s) not in the ground truth, "
                        f"e.g. {bad_images[:5]}: predictions and annotations come from different image sets")
    bad_cats = sorted({r["category_id"] for r in results} - category_ids)
    if bad_cats:
        raise DataError(f"detection category id(s) {bad_cats[:5]} not in the ground truth categories "
                        f"{sorted(category_ids)}")


def _run_cocoeval(gt: COCO, results: list[dict], image_ids: list[int], category_ids: list[int]):
    if results:
        with _quiet():
            dt = gt.loadRes([dict(r) for r in results])  # loadRes adds keys to each dict: copy
    else:  # loadRes indexes results[0]: build the empty result set by hand
        dt = _coco_from_dict({"images": list(gt.dataset["images"]), "annotations": [],
                              "categories": list(gt.dataset["categories"])})
    coco_eval = COCOeval(gt, dt, iouType="bbox")
    coco_eval.params.imgIds = list(image_ids)
    coco_eval.params.catIds = sorted(category_ids)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco_eval.evaluate()
        coco_eval.accumulate()
        buffer.seek(0)
        buffer.truncate()  # keep only summarize()'s table
        coco_eval.summarize()
    # precision: [IoU thresholds T, recall points R, categories K, area ranges A, max dets M]; -1 = undefined.
    precision = coco_eval.eval["precision"]
    per_class = {}
    for k, cat in enumerate(coco_eval.params.catIds):
        p_all = precision[:, :, k, 0, -1]
        p_50 = precision[0, :, k, 0, -1]
        per_class[cat] = (float(p_all[p_all > -1].mean()) if (p_all > -1).any() else float("nan"),
                          float(p_50[p_50 > -1].mean()) if (p_50 > -1).any() else float("nan"))
    return coco_eval.stats, per_class, buffer.getvalue()


def _voc_inputs(coco_gt: dict, results: list[dict], image_ids: Iterable[int]):
    """COCO dicts -> the arrays :func:`voc_evaluate` takes (difficult or crowd -> ignore)."""
    gt_by_image = {i: {"boxes": [], "labels": [], "ignore": []} for i in image_ids}
    for ann in coco_gt.get("annotations", []):
        gt = gt_by_image.get(ann["image_id"])
        if gt is not None:
            x, y, w, h = ann["bbox"]
            gt["boxes"].append([x, y, x + w, y + h])
            gt["labels"].append(ann["category_id"])
            gt["ignore"].append(bool(ann.get("difficult", 0)) or bool(ann.get("iscrowd", 0)))
    gt_by_image = {i: {"boxes": np.asarray(g["boxes"], dtype=np.float64).reshape(-1, 4),
                       "labels": np.asarray(g["labels"], dtype=np.int64),
                       "ignore": np.asarray(g["ignore"], dtype=bool)} for i, g in gt_by_image.items()}
    boxes = np.asarray([r["bbox"] for r in results], dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    detections = {"image_ids": np.asarray([r["image_id"] for r in results], dtype=np.int64),
                  "labels": np.asarray([r["category_id"] for r in results], dtype=np.int64),
                  "scores": np.asarray([r["score"] for r in results], dtype=np.float64),
                  "boxes": boxes}
    return gt_by_image, detections


def run_evaluation(coco_gt: dict, results: list[dict], image_ids: Iterable[int] | None = None,
                   category_ids: Iterable[int] | None = None) -> DetectionEvaluation:
    """Both protocols on COCO-format results.

    Args:
        coco_gt: COCO instances dict (images, annotations with xywh ``bbox``, categories).
        results: COCO result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
        image_ids: images to score (default: every ground-truth image).
        category_ids: categories to score (default: every ground-truth category).
    """
    check_results(coco_gt, results)
    gt_ids = [img["id"] for img in coco_gt.get("images", [])]
    image_ids = sorted(set(gt_ids if image_ids is None else image_ids))
    missing = sorted(set(image_ids) - set(gt_ids))
    if missing:
        raise DataError(f"{len(missing)} evaluated image id(s) not in the ground truth, e.g. {missing[:5]}")
    category_ids = list(category_ids) if category_ids is not None else sorted(c["id"] for c in coco_gt["categories"])
    selected, scored = set(image_ids), set(category_ids)
    results = [r for r in results if r["image_id"] in selected and r["category_id"] in scored]
    metrics = {key: 0.0 for key in (*COCO_STATS, *VOC_KEYS)}
    coco_per_class = {c: (float("nan"), float("nan")) for c in category_ids}
    summary = "no images evaluated\n"
    if image_ids:
        stats, coco_per_class, summary = _run_cocoeval(_coco_from_dict(_gt_copy(coco_gt)), results, image_ids,
                                                       category_ids)
        metrics.update({key: float(stats[i]) for key, i in COCO_STATS.items()})
    voc = voc_evaluate(*_voc_inputs(coco_gt, results, image_ids), classes=category_ids)
    metrics["voc07_mAP50"] = mean_ap(voc, use_07_metric=True)
    metrics["voc12_mAP50"] = mean_ap(voc, use_07_metric=False)
    metrics["num_images"] = float(len(image_ids))
    metrics["num_detections"] = float(len(results))
    return DetectionEvaluation(metrics, voc, coco_per_class, summary)


def evaluate_coco_results(coco_gt: dict, results: list[dict], image_ids: Iterable[int] | None = None) -> dict[str, float]:
    """Flat metrics (COCO ``bbox_*``, ``voc07_mAP50``, ``voc12_mAP50``, ``num_images``,
    ``num_detections``) of COCO-format results; what ``tools/eval.py --predictions`` reports."""
    return run_evaluation(coco_gt, results, image_ids).metrics


class DetectionEvaluator(Evaluator):
    """Collects COCO-format results per image and scores them with both protocols.

    Args:
        coco_gt: ground truth as a COCO instances dict; VOC difficult boxes carry ``"difficult": 1``.
        category_ids: ``category_ids[k - 1]`` is the category id of contiguous label ``k`` (1..K).
        class_names: display name of each label, same order as ``category_ids``.
    """

    # results: COCO result dicts; image_ids: every image passed to update(), with or without
    # detections (needed to score images where the model found nothing).
    state_fields = ("results", "image_ids")

    def __init__(self, coco_gt: dict, category_ids: list[int], class_names: list[str]) -> None:
        if len(category_ids) != len(class_names):
            raise ValueError(f"{len(category_ids)} category ids but {len(class_names)} class names")
        known = {c["id"] for c in coco_gt.get("categories", [])}
        unknown = [c for c in category_ids if c not in known]
        if unknown:
            raise DataError(f"category ids {unknown} are not in the ground-truth categories {sorted(known)}")
        self.coco_gt = coco_gt
        self.category_ids = [int(c) for c in category_ids]
        self.class_names = list(class_names)
        self._gt_image_ids = {img["id"] for img in coco_gt.get("images", [])}
        self._cache: DetectionEvaluation | None = None
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._cache = None

    def gather(self) -> None:
        super().gather()
        self._cache = None

    def update(self, predictions: list[dict], targets: list[dict]) -> None:
        """Args: predictions, per image: {"boxes": (N, 4) x1y1x2y2 in original-image pixels,
        "scores": (N,), "labels": (N,) int64 in 1..K}; targets, per image: {"image_id": int, ...}."""
        self._cache = None
        for pred, target in zip(predictions, targets, strict=True):
            image_id = int(target["image_id"])
            if image_id not in self._gt_image_ids:
                raise DataError(f"image id {image_id} is not in the detection ground truth")
            boxes = pred["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
            scores = pred["scores"].detach().float().cpu().numpy().reshape(-1)
            labels = pred["labels"].detach().cpu().numpy().reshape(-1)
            if labels.size and (labels.min() < 1 or labels.max() > len(self.category_ids)):
                raise ValueError(f"predicted labels must lie in 1..{len(self.category_ids)}, got "
                                 f"{labels.min()}..{labels.max()}")
            self.image_ids.append(image_id)
            for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                # Rounded to 1/1000 px here, so detections.json reproduces compute() exactly.
                self.results.append({"image_id": image_id, "category_id": self.category_ids[label - 1],
                                     "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                                     "score": score})

    def load_results(self, path: str | Path) -> None:
        """Take a COCO-format results file from any detector as the state to score
        (``tools/eval.py --predictions``); every ground-truth image counts, detected or not."""
        path = Path(path)
        try:
            results = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"predictions file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        keys = {"image_id", "category_id", "bbox", "score"}
        if not isinstance(results, list) or any(not isinstance(r, dict) or not keys <= r.keys() for r in results):
            raise DataError(f"{path}: expected a JSON list of COCO results with keys {sorted(keys)}")
        check_results(self.coco_gt, results)
        self.results, self.image_ids, self._cache = results, sorted(self._gt_image_ids), None
        self.source = f"the results file {path} (no model ran here: its detections were scored as they are)"

    def evaluation(self) -> DetectionEvaluation:
        """The full evaluation of the accumulated state (cached until the state changes)."""
        if self._cache is None:
            repeated = [i for i, n in Counter(self.image_ids).items() if n > 1]
            if repeated:  # duplicated detections would count as false positives
                raise DataError(f"{len(repeated)} image(s) evaluated more than once, e.g. {repeated[:5]}: "
                                "use a sampler that does not pad (engine.distributed.ShardSampler)")
            self._cache = run_evaluation(self.coco_gt, self.results, self.image_ids, self.category_ids)
        return self._cache

    def metric_names(self) -> set[str]:
        return {*COCO_STATS, *VOC_KEYS, "num_images", "num_detections"}

    def compute(self) -> dict[str, float]:
        return dict(self.evaluation().metrics)

    def write_report(self, run_dir: str | Path) -> None:
        """detections.json, per_class_ap.csv, coco_eval.txt, metrics.json, protocol.md, plots/pr_curves.png."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        ev = self.evaluation()
        (run_dir / "detections.json").write_text(json.dumps(self.results))
        (run_dir / "coco_eval.txt").write_text(ev.coco_summary)
        (run_dir / "metrics.json").write_text(json.dumps(ev.metrics, indent=2))
        (run_dir / "protocol.md").write_text(_protocol_markdown(ev.metrics, getattr(self, "source", None)))
        with open(run_dir / "per_class_ap.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "category_id", "num_gt", "num_ignored", "num_detections",
                             "AP50_voc07", "AP50_voc12", "AP_coco", "AP50_coco"])
            for name, cat in zip(self.class_names, self.category_ids):
                v, (ap, ap50) = ev.voc[cat], ev.coco_per_class[cat]
                writer.writerow([name, cat, v.num_gt, v.num_ignored, v.num_detections,
                                 *(_fmt(x) for x in (v.ap07, v.ap12, ap, ap50))])
        curves = [(name, ev.voc[cat]) for name, cat in zip(self.class_names, self.category_ids)]
        plot_pr_curves(curves, run_dir / "plots" / "pr_curves.png")


def _fmt(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.4f}"


def _protocol_markdown(metrics: dict[str, float], source: str | None = None) -> str:
    lines = ["# Detection evaluation protocol", "", "| key | value | meaning |", "|---|---|---|"]
    for key, meaning in PROTOCOL.items():
        value = f"{metrics[key]:.4f}" if key in metrics else ""
        lines.append(f"| {key} | {value} | {meaning} |")
    how = (f"Detections from {source}." if source else
           "Each image ran through the model alone (batch 1, as torchvision's reference evaluates).")
    lines += ["", f"Images scored: {int(metrics['num_images'])}; detections: {int(metrics['num_detections'])}. {how}",
              "Per-class numbers: per_class_ap.csv (num_gt counts non-difficult, non-crowd boxes).", ""]
    return "\n".join(lines)


def _envelope_steps(recall: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corners of the precision envelope, one per distinct recall (the points VOC2010+ AP sums),
    starting at recall 0; drawn with ``step(where="pre")`` the area under it is the AP."""
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.r_[True, recall[1:] != recall[:-1]]
    return np.r_[0.0, recall[first]], np.r_[envelope[0], envelope[first]]


def plot_pr_curves(curves: list[tuple[str, VocClassResult]], path: str | Path) -> Path:
    """Per-class precision-recall at IoU 0.5: the precision envelope whose area is the VOC2010+ AP.
    Up to 10 classes share one axes; more get one small panel each."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(curves)
    shared = n <= 10
    cols = 1 if shared else min(8, math.ceil(math.sqrt(n)))
    rows = 1 if shared else math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7, 5.5) if shared else (2.4 * cols, 2.2 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for i, (name, r) in enumerate(curves):
        ax = axes[0, 0] if shared else axes.flat[i]
        label = (f"{name} (n={r.num_gt}): AP12 {r.ap12:.3f}, AP07 {r.ap07:.3f}" if r.num_gt else f"{name}: no GT")
        if len(r.recall):
            recall, precision = _envelope_steps(r.recall, r.precision)
            ax.step(recall, precision, where="pre", color=colours(i % 10) if shared else "C0", lw=1.6,
                    label=label)
        elif shared:
            ax.plot([], [], color=colours(i % 10), label=label)
        if not shared:
            ax.set_title(f"{name}\nAP12 {r.ap12:.2f}" if r.num_gt else f"{name}\nno GT", fontsize=8)
            ax.tick_params(labelsize=6)
    for ax in axes.flat[n:] if not shared else []:
        ax.axis("off")
    for ax in axes.flat[: max(n, 1)]:
        ax.set(xlim=(0, 1.01), ylim=(0, 1.03))
        ax.grid(alpha=0.3)
    if shared:
        ax = axes[0, 0]
        ax.set(xlabel="recall", ylabel="precision (interpolated)", title="Precision-recall per class, IoU 0.5 (VOC)")
        if n:
            ax.legend(fontsize=8, loc="lower left")
    else:
        fig.suptitle("Precision-recall per class, IoU 0.5 (VOC2010+ envelope)")
        fig.supxlabel("recall")
        fig.supylabel("precision (interpolated)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
