"""Detection evaluator: COCO numbers against pycocotools run by hand, VOC AP against hand-computed
values, empty / unknown inputs, the two-rank merge and the report files."""

import contextlib
import copy
import csv
import io
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resvision.errors import DataError
from resvision.tasks.detection.evaluator import (
    COCO_STATS,
    DetectionEvaluator,
    _envelope_steps,
    evaluate_coco_results,
    plot_pr_curves,
)
from resvision.tasks.detection.voc_eval import box_iou, voc_ap, voc_evaluate

# Non-contiguous category ids; label k (1..3) -> CATEGORY_IDS[k - 1].
CATEGORY_IDS = [3, 7, 12]
CLASS_NAMES = ["cat", "dog", "bird"]


def _ann(ann_id, image_id, cat, bbox, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": 0, **extra}


@pytest.fixture
def coco_gt():
    """4 images (ids 1, 2, 5, 9; 9 has no objects), small (< 32²) / medium / large boxes, a crowd region."""
    anns = [
        _ann(1, 1, 3, [10, 10, 200, 150]),     # large cat
        _ann(2, 1, 7, [300, 200, 60, 50]),     # medium dog
        _ann(3, 1, 12, [500, 50, 20, 15]),     # small bird
        _ann(4, 2, 3, [50, 60, 70, 40]),       # medium cat
        _ann(5, 2, 7, [200, 100, 300, 200], iscrowd=1),  # crowd of dogs
        _ann(6, 2, 7, [100, 300, 150, 120]),   # large dog
        _ann(7, 5, 12, [400, 300, 50, 45]),    # medium bird
        _ann(8, 5, 12, [20, 20, 25, 25]),      # small bird
        _ann(9, 5, 3, [200, 200, 180, 160]),   # large cat
    ]
    images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in (1, 2, 5, 9)]
    categories = [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, CLASS_NAMES)]
    return {"images": images, "annotations": anns, "categories": categories}


# Hand-jittered detections per image: (x1, y1, x2, y2, score, label); values exact in float32.
DETECTIONS = {
    1: [(12, 8, 214, 162, 0.95, 1), (298, 204, 362, 248, 0.80, 2), (501, 52, 519, 66.5, 0.40, 3),
        (14, 12, 205, 158, 0.30, 1),                      # duplicate cat -> FP
        (480, 40, 530, 70, 0.55, 3)]                      # loose bird box (IoU < 0.5)
       # 10 background cats scored above the true one, which becomes the 11th: AR@10 < AR@100.
       + [(400 + 20 * k, 400, 415 + 20 * k, 420, 0.96 + 0.001 * k, 1) for k in range(10)],
    2: [(52, 58, 118, 101, 0.70, 1), (210, 110, 290, 170, 0.85, 2),  # the second lies inside the crowd
        (104, 296, 252, 424, 0.65, 2), (400, 10, 450, 60, 0.60, 1)],  # last: background FP
    5: [(402, 301, 449.5, 346, 0.90, 3), (18, 22, 44, 46, 0.35, 3), (195, 205, 370, 355, 0.75, 1),
        (20, 20, 45, 45, 0.50, 2)],                       # dog on the small bird: wrong class
    9: [(100, 100, 160, 150, 0.20, 2)],                   # FP on the empty image
}


def _predictions(image_ids):
    preds, targets = [], []
    for i in image_ids:
        rows = torch.tensor(DETECTIONS[i], dtype=torch.float64).reshape(-1, 6)
        preds.append({"boxes": rows[:, :4].float(), "scores": rows[:, 4].float(), "labels": rows[:, 5].long()})
        targets.append({"image_id": i})
    return preds, targets


def _coco_results(image_ids):
    """The same detections in COCO results format, converted independently of the evaluator."""
    return [{"image_id": i, "category_id": CATEGORY_IDS[int(lab) - 1], "bbox": [x1, y1, x2 - x1, y2 - y1],
             "score": float(np.float32(s))}
            for i in image_ids for (x1, y1, x2, y2, s, lab) in DETECTIONS[i]]


def _pycocotools_stats(coco_gt, results, image_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(coco_gt)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(gt, dt, iouType="bbox")
        if image_ids is not None:
            ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # stats: 0 AP, 1 AP50, 2 AP75, 3-5 AP small / medium / large, 6-8 AR@1/10/100, 9-11 AR s/m/l.
    names = ["bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl",
             "bbox_AR1", "bbox_AR10", "bbox_AR100", "bbox_ARs", "bbox_ARm", "bbox_ARl"]
    indices = dict(zip(names, range(12)))
    assert ev.stats[7] != ev.stats[8] or image_ids is not None  # the data tells AR@10 from AR@100
    return {key: float(ev.stats[i]) for key, i in indices.items()}


def _evaluator(coco_gt, image_ids=(1, 2, 5, 9)):
    ev = DetectionEvaluator(coco_gt, CATEGORY_IDS, CLASS_NAMES)
    ev.update(*_predictions(image_ids))
    return ev


def test_coco_numbers_equal_pycocotools(coco_gt):
    gt_before = copy.deepcopy(coco_gt)
    ev = _evaluator(coco_gt)
    metrics = ev.compute()
    expected = _pycocotools_stats(coco_gt, _coco_results([1, 2, 5, 9]))
    assert {k: metrics[k] for k in COCO_STATS} == pytest.approx(expected, abs=1e-12)
    assert set(COCO_STATS) == set(expected)  # all 12 of COCOeval's stats are reported
    assert set(metrics) == ev.metric_names()  # the names a train.monitor is checked against when a run starts
    assert 0.2 < metrics["bbox_AP"] < 0.9 and all(metrics[k] >= 0 for k in ("bbox_APs", "bbox_APm", "bbox_APl"))
    assert metrics["num_images"] == 4 and metrics["num_detections"] == 24
    assert 0 < metrics["voc12_mAP50"] <= 1 and 0 < metrics["voc07_mAP50"] <= 1
    assert coco_gt == gt_before  # pycocotools mutates annotations: the evaluator must work on a copy
    # ... and results (loadRes adds area / id / iscrowd / segmentation): the state must stay COCO results.
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in ev.results)


def test_only_seen_images_are_scored(coco_gt):
    metrics = _evaluator(coco_gt, image_ids=(1, 2)).compute()
    expected = _pycocotools_stats(coco_gt, _coco_results([1, 2]), image_ids=[1, 2])
    assert {k: metrics[k] for k in COCO_STATS} == pytest.approx(expected, abs=1e-12)
    assert metrics["num_images"] == 2


def test_voc_ap_hand_computed():
    # One class, two images, three GT boxes (one difficult), four detections.
    #   image 1: GT a = [0, 0, 10, 10]; GT b = [20, 20, 30, 30] difficult
    #   image 2: GT c = [0, 0, 10, 10]
    #   npos = 2 (the difficult box does not count)
    # Detections by score:
    #   d1 0.9 image 1 [0, 0, 10, 10]   IoU(a) = 1                     -> TP (a matched)
    #   d2 0.8 image 1 [20, 20, 30, 30] best match b, difficult       -> ignored (neither TP nor FP)
    #   d3 0.7 image 1 [1, 0, 11, 10]   IoU(a) = 90 / 110 = 0.82, a taken -> FP (duplicate)
    #   d4 0.6 image 2 [0, 0, 10, 20]   IoU(c) = 100 / 200 = 0.5 (>= 0.5) -> TP
    # Sequence TP, FP, TP: recall 1/2, 1/2, 1; precision 1, 1/2, 2/3.
    # AP07: thresholds 0..0.5 (6 of them) -> max precision 1; 0.6..1.0 (5) -> 2/3:
    #       (6 * 1 + 5 * 2/3) / 11 = 28/33.
    # AP12: envelope 1 on (0, 1/2], 2/3 on (1/2, 1]: 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # (Counting d2 as FP would give 3/4 for AP12; using "> 0.5" would make d4 an FP: AP12 1/2.)
    gt = {1: {"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), "labels": np.array([1, 1]),
              "ignore": np.array([False, True])},
          2: {"boxes": np.array([[0, 0, 10, 10]]), "labels": np.array([1]), "ignore": np.array([False])}}
    # Given out of score order on purpose.
    dets = {"image_ids": np.array([2, 1, 1, 1]), "labels": np.array([1, 1, 1, 1]),
            "scores": np.array([0.6, 0.7, 0.9, 0.8]),
            "boxes": np.array([[0, 0, 10, 20], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30]])}
    result = voc_evaluate(gt, dets, classes=[1])[1]
    assert result.num_gt == 2 and result.num_ignored == 1 and result.num_detections == 4
    np.testing.assert_allclose(result.recall, [1 / 2, 1 / 2, 1])
    np.testing.assert_allclose(result.precision, [1, 1 / 2, 2 / 3])
    assert result.ap07 == pytest.approx(float(Fraction(28, 33)), abs=1e-15)
    assert result.ap12 == pytest.approx(float(Fraction(5, 6)), abs=1e-15)
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1, 0.5, 2 / 3]), use_07_metric=True) == pytest.approx(28 / 33)
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1, 0.5, 2 / 3]), use_07_metric=False) == pytest.approx(5 / 6)


def test_voc_ap_envelope_hand_computed():
    # TP, FP, TP, TP with npos = 4: recall 1/4, 1/4, 1/2, 3/4; precision 1, 1/2, 2/3, 3/4.
    # Envelope (max precision at recall >= r): 1, 3/4, 3/4, 3/4.
    # AP12 = 1/4 * 1 + 1/4 * 3/4 + 1/4 * 3/4 = 5/8 (the raw curve would give 29/48).
    # AP07: t in {0, .1, .2} -> 1; t in {.3, .4, .5, .6, .7} -> 3/4; t in {.8, .9, 1} -> 0:
    #       (3 + 5 * 3/4) / 11 = 27/44.
    recall, precision = np.array([1, 1, 2, 3]) / 4, np.array([1, 1 / 2, 2 / 3, 3 / 4])
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(5 / 8, abs=1e-15)
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(27 / 44, abs=1e-15)


def test_voc_ap_edges():
    # Recall exactly 3/10 must reach the t = 0.3 threshold (np.arange(0, 1.1, 0.1) gives 0.30000000000000004).
    assert voc_ap(np.array([0.3]), np.array([1.0]), use_07_metric=True) == pytest.approx(4 / 11)
    assert voc_ap(np.array([]), np.array([]), use_07_metric=True) == 0.0
    assert voc_ap(np.array([]), np.array([]), use_07_metric=False) == 0.0
    # Devkit inclusive pixels: [0, 0, 1, 1] and [1, 1, 2, 2] are 2x2 boxes sharing one pixel -> 1/7.
    assert box_iou([[0, 0, 1, 1]], [[1, 1, 2, 2]], pixel_offset=1.0)[0, 0] == pytest.approx(1 / 7)
    assert box_iou([[0, 0, 1, 1]], [[1, 1, 2, 2]])[0, 0] == 0.0


def test_difficult_boxes_coco_keeps_voc_ignores():
    images = [{"id": 1, "width": 200, "height": 200}]
    cats = [{"id": 4, "name": "a"}]
    normal, difficult = _ann(1, 1, 4, [0, 0, 50, 50]), _ann(2, 1, 4, [100, 100, 50, 50], difficult=1)
    results = [{"image_id": 1, "category_id": 4, "bbox": [100, 100, 50, 50], "score": 0.9},  # on the difficult box
               {"image_id": 1, "category_id": 4, "bbox": [0, 0, 50, 50], "score": 0.8}]
    with_difficult = evaluate_coco_results({"images": images, "categories": cats, "annotations": [normal, difficult]},
                                           results)
    plain = dict(difficult)
    del plain["difficult"]
    as_ordinary = evaluate_coco_results({"images": images, "categories": cats, "annotations": [normal, plain]}, results)
    dropped = evaluate_coco_results({"images": images, "categories": cats, "annotations": [normal]}, results)
    # COCO: the difficult box is ordinary ground truth, so the top detection is a TP (AP 1), not an FP (AP50 1/2).
    assert with_difficult["bbox_AP50"] == pytest.approx(as_ordinary["bbox_AP50"]) == pytest.approx(1.0)
    assert dropped["bbox_AP50"] == pytest.approx(0.5, abs=0.01)
    # VOC: the detection on the difficult box is ignored; the other is the only positive -> AP 1 (not 1/2).
    assert with_difficult["voc12_mAP50"] == 1.0 and with_difficult["voc07_mAP50"] == pytest.approx(1.0)
    assert dropped["voc12_mAP50"] == 0.5
    # An undetected difficult box: VOC does not count it as a positive (AP 1), COCO does (a miss: AP50 ~1/2).
    missed = evaluate_coco_results({"images": images, "categories": cats, "annotations": [normal, difficult]},
                                   results[1:])
    assert missed["voc12_mAP50"] == 1.0 and missed["voc07_mAP50"] == pytest.approx(1.0)
    assert missed["bbox_AP50"] == pytest.approx(0.5, abs=0.01)


def test_empty_predictions_give_zeros(coco_gt, tmp_path):
    ev = DetectionEvaluator(coco_gt, CATEGORY_IDS, CLASS_NAMES)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    ev.update([empty] * 4, [{"image_id": i} for i in (1, 2, 5, 9)])
    metrics = ev.compute()
    assert metrics["num_images"] == 4 and metrics["num_detections"] == 0
    assert all(metrics[k] == 0.0 for k in (*COCO_STATS, "voc07_mAP50", "voc12_mAP50"))
    ev.write_report(tmp_path)
    assert json.loads((tmp_path / "detections.json").read_text()) == []
    # Nothing seen at all: zeros too.
    nothing = DetectionEvaluator(coco_gt, CATEGORY_IDS, CLASS_NAMES)
    assert nothing.compute()["bbox_AP"] == 0.0 and nothing.compute()["num_images"] == 0
    nothing.write_report(tmp_path / "nothing")
    assert (tmp_path / "nothing" / "plots" / "pr_curves.png").is_file()


def test_unknown_ids_are_rejected(coco_gt):
    ev = DetectionEvaluator(coco_gt, CATEGORY_IDS, CLASS_NAMES)
    preds, _ = _predictions([1])
    with pytest.raises(DataError, match="image id 999"):
        ev.update(preds, [{"image_id": torch.tensor(999)}])
    with pytest.raises(DataError, match="not in the ground truth"):
        evaluate_coco_results(coco_gt, [{"image_id": 999, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 1.0}])
    with pytest.raises(DataError, match="category"):
        evaluate_coco_results(coco_gt, [{"image_id": 1, "category_id": 4, "bbox": [0, 0, 5, 5], "score": 1.0}])
    with pytest.raises(DataError, match="category ids"):
        DetectionEvaluator(coco_gt, [3, 8], ["a", "b"])
    bad = {"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([4])}
    with pytest.raises(ValueError, match="1..3"):
        ev.update([bad], [{"image_id": 1}])
    twice = _evaluator(coco_gt, image_ids=(1, 1))  # a padding sampler would do this
    with pytest.raises(DataError, match="more than once"):
        twice.compute()


def test_gather_two_ranks_equals_one(coco_gt):
    single = _evaluator(coco_gt)
    rank0, rank1 = _evaluator(coco_gt, image_ids=(1, 5)), _evaluator(coco_gt, image_ids=(9, 2))
    # What Evaluator.gather() does with torch.distributed: concatenate each state list in rank order.
    merged = DetectionEvaluator(coco_gt, CATEGORY_IDS, CLASS_NAMES)
    for name in merged.state_fields:
        setattr(merged, name, getattr(rank0, name) + getattr(rank1, name))
    merged.gather()  # single process: a no-op that keeps the merged state
    assert merged.compute() == single.compute()
    assert rank0.compute() != single.compute()


def test_write_report(coco_gt, tmp_path):
    ev = _evaluator(coco_gt)
    ev.write_report(tmp_path)
    metrics = ev.compute()
    for name in ("detections.json", "per_class_ap.csv", "coco_eval.txt", "protocol.md", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    # The written detections reproduce the metrics (what tools/eval.py --predictions does).
    assert evaluate_coco_results(coco_gt, json.loads((tmp_path / "detections.json").read_text())) == metrics
    with open(tmp_path / "per_class_ap.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == CLASS_NAMES and [int(r["category_id"]) for r in rows] == CATEGORY_IDS
    assert [int(r["num_gt"]) for r in rows] == [3, 2, 3]  # the crowd dog is not a positive
    assert [int(r["num_ignored"]) for r in rows] == [0, 1, 0]
    voc12 = np.mean([float(r["AP50_voc12"]) for r in rows])
    assert voc12 == pytest.approx(metrics["voc12_mAP50"], abs=1e-4)
    assert all(0 <= float(r["AP_coco"]) <= 1 for r in rows)
    assert "Average Precision" in (tmp_path / "coco_eval.txt").read_text()
    protocol = (tmp_path / "protocol.md").read_text()
    assert "difficult" in protocol and "11-point" in protocol
    with Image.open(tmp_path / "plots" / "pr_curves.png") as image:
        assert image.size[0] > 400 and image.size[1] > 300


def test_pr_plot_many_classes(coco_gt, tmp_path):
    """More than 10 classes get one panel each (one legend with 80 entries is unreadable)."""
    ev = _evaluator(coco_gt)
    result = ev.evaluation().voc[3]
    path = plot_pr_curves([(f"class{i}", result) for i in range(12)], tmp_path / "pr.png")
    with Image.open(path) as image:
        assert image.size[0] > 600
    # The plotted corners are the envelope VOC2010+ AP sums: the area under the drawn steps is AP12.
    recall, precision = _envelope_steps(result.recall, result.precision)
    assert not math.isnan(result.ap12)
    assert np.sum(np.diff(recall) * precision[1:]) == pytest.approx(result.ap12)
