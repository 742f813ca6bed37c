"""Segmentation evaluator: a hand-computed case, scikit-learn as the reference on random maps, the
absent-class rule, logits input, bad mask values, the one-process gather and the report files."""

import csv
import json
from fractions import Fraction as F

import numpy as np
import pytest
import torch
import torch.distributed as dist
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    jaccard_score,
)

from resvision.engine import distributed as dist_utils
from resvision.errors import DataError
from resvision.tasks.segmentation.evaluator import SegmentationEvaluator

IGNORE = 255


def _t(array):
    return torch.as_tensor(np.asarray(array), dtype=torch.int64)


def _hand_case():
    """2 images of 2x3 pixels, 3 classes, one ignored pixel per image (its prediction must not count)."""
    targets = _t([[[0, 0, 1], [1, 2, IGNORE]],
                  [[2, 2, IGNORE], [0, 1, 2]]])
    preds = _t([[[0, 1, 1], [1, 2, 0]],
                [[2, 0, 1], [0, 1, 1]]])
    return preds, targets


def test_hand_computed_case():
    # Valid (target, pred) pairs: image 1 (0,0) (0,1) (1,1) (1,1) (2,2); image 2 (2,2) (2,0) (0,0) (1,1) (2,1).
    # Confusion (rows = ground truth):  [[2, 1, 0],
    #                                    [0, 3, 0],
    #                                    [1, 1, 2]]
    # TP = (2, 3, 2); GT pixels (rows) = (3, 3, 4); predicted pixels (columns) = (3, 5, 2); total 10.
    # IoU  = 2/(3+3-2) = 1/2, 3/(3+5-3) = 3/5, 2/(4+2-2) = 1/2        -> mIoU  = (1/2 + 3/5 + 1/2)/3 = 8/15
    # Dice = 4/6 = 2/3,       6/8 = 3/4,       4/6 = 2/3              -> mDice = (2/3 + 3/4 + 2/3)/3 = 25/36
    # acc  = 2/3,             3/3 = 1,         2/4 = 1/2              -> mean_acc = (2/3 + 1 + 1/2)/3 = 13/18
    # pixel_acc = (2 + 3 + 2)/10 = 7/10
    # fwIoU = 3/10 * 1/2 + 3/10 * 3/5 + 4/10 * 1/2 = 15/100 + 18/100 + 20/100 = 53/100
    ev = SegmentationEvaluator(["a", "b", "c"], ignore_index=IGNORE)
    ev.update(*_hand_case())
    assert ev.matrix.dtype == torch.int64
    assert ev.matrix.tolist() == [[2, 1, 0], [0, 3, 0], [1, 1, 2]]
    expected = {"mIoU": F(8, 15), "mDice": F(25, 36), "pixel_acc": F(7, 10), "mean_acc": F(13, 18),
                "fwIoU": F(53, 100), "IoU_a": F(1, 2), "IoU_b": F(3, 5), "IoU_c": F(1, 2),
                "num_pixels": 10, "num_classes_evaluated": 3}
    metrics = ev.compute()
    assert set(metrics) == set(expected) == ev.metric_names()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(float(value), abs=1e-12), key
        assert isinstance(metrics[key], float), key


def test_random_maps_against_scikit_learn():
    rng = np.random.default_rng(0)
    classes = 4
    ev = SegmentationEvaluator([f"c{i}" for i in range(classes)], ignore_index=IGNORE)
    all_t, all_p = [], []
    for shape in [(2, 7, 9), (3, 5, 4), (1, 16, 11), (4, 3, 3)]:  # several update() calls, ragged sizes
        target = rng.integers(0, classes, size=shape)
        target[rng.random(shape) < 0.1] = IGNORE
        # Predictions right ~60% of the time, so the matrix has a real diagonal and off-diagonal mass.
        pred = np.where(rng.random(shape) < 0.6, np.where(target == IGNORE, 0, target),
                        rng.integers(0, classes, size=shape))
        ev.update(_t(pred), _t(target))
        valid = target != IGNORE
        all_t.append(target[valid])
        all_p.append(pred[valid])
    y_true, y_pred = np.concatenate(all_t), np.concatenate(all_p)
    labels = list(range(classes))
    reference = confusion_matrix(y_true, y_pred, labels=labels)
    np.testing.assert_array_equal(ev.matrix.numpy(), reference)

    # IoU recomputed from sklearn's matrix by counting, and separately from sklearn's own metrics.
    iou = [reference[c, c] / (reference[c, :].sum() + reference[:, c].sum() - reference[c, c]) for c in labels]
    np.testing.assert_allclose(iou, jaccard_score(y_true, y_pred, labels=labels, average=None))
    metrics = ev.compute()
    assert [metrics[f"IoU_c{c}"] for c in labels] == pytest.approx(iou)
    assert metrics["mIoU"] == pytest.approx(np.mean(iou))
    assert metrics["mDice"] == pytest.approx(f1_score(y_true, y_pred, labels=labels, average="macro"))
    assert metrics["pixel_acc"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["mean_acc"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    # sklearn's "weighted" average weights each class by its ground-truth support: the fwIoU definition.
    assert metrics["fwIoU"] == pytest.approx(jaccard_score(y_true, y_pred, labels=labels, average="weighted"))
    assert metrics["num_pixels"] == len(y_true)


def test_class_absent_from_prediction_and_ground_truth_is_excluded():
    preds, targets = _hand_case()  # classes 0..2 only
    four = SegmentationEvaluator(["a", "b", "c", "d"])
    four.update(preds, targets)
    metrics = four.compute()
    assert "IoU_d" not in metrics
    assert metrics["num_classes_evaluated"] == 3
    assert metrics["mIoU"] == pytest.approx(np.mean([metrics["IoU_a"], metrics["IoU_b"], metrics["IoU_c"]]))
    assert metrics["mIoU"] == pytest.approx(8 / 15)
    three = SegmentationEvaluator(["a", "b", "c"])
    three.update(preds, targets)
    for key in ("mIoU", "mDice", "pixel_acc", "mean_acc", "fwIoU"):
        assert metrics[key] == pytest.approx(three.compute()[key]), key

    # Contrast: a class that is predicted but has no ground truth is evaluated, with IoU 0.
    # One correct 0 becomes a 3: rows a (1, 1, 0, 1), b (0, 3, 0, 0), c (1, 1, 2, 0), d (0, 0, 0, 0);
    # predicted pixels (2, 5, 2, 1). IoU = 1/(3+2-1) = 1/4, 3/5, 1/2, 0/(0+1-0) = 0 -> mIoU = (27/20)/4 = 27/80.
    # Recall: 1/3, 1, 1/2 and none for d (no ground truth) -> mean_acc = (11/6)/3 = 11/18.
    preds = preds.clone()
    preds[0, 0, 0] = 3
    four.reset()
    four.update(preds, targets)
    metrics = four.compute()
    assert metrics["IoU_d"] == 0.0 and metrics["num_classes_evaluated"] == 4
    assert metrics["IoU_a"] == pytest.approx(1 / 4)
    assert metrics["mIoU"] == pytest.approx(27 / 80)
    assert metrics["mean_acc"] == pytest.approx(11 / 18)


def test_logits_equal_argmax_input():
    rng = np.random.default_rng(1)
    classes, shape = 5, (3, 6, 7)  # N, C, H, W all different: a wrong argmax axis cannot pass
    logits = torch.from_numpy(rng.normal(size=(shape[0], classes, *shape[1:]))).float()
    target = rng.integers(0, classes, size=shape)
    target[rng.random(shape) < 0.1] = IGNORE
    from_logits, from_labels = (SegmentationEvaluator([str(i) for i in range(classes)]) for _ in range(2))
    from_logits.update(logits, _t(target))
    from_labels.update(logits.argmax(dim=1), _t(target))
    assert torch.equal(from_logits.matrix, from_labels.matrix)
    assert from_logits.matrix.sum() == (target != IGNORE).sum()
    assert from_logits.compute() == from_labels.compute()


def test_target_outside_classes_raises_and_ignore_index_is_ignored():
    ev = SegmentationEvaluator(["a", "b", "c"])
    preds = _t([[[0, 1, 2]]])
    ev.update(preds, _t([[[0, IGNORE, 2]]]))  # 255 is the ignore index: accepted, not counted
    assert ev.compute()["num_pixels"] == 2
    before = ev.matrix.clone()
    with pytest.raises(DataError, match=r"\[7\]") as info:
        ev.update(preds, _t([[[0, 7, IGNORE]]]))
    message = str(info.value)
    assert "\n" not in message and "[0, 3)" in message
    assert torch.equal(ev.matrix, before)  # nothing of the bad batch was counted


def test_gather_on_one_process_keeps_the_matrix(tmp_path):
    ev = SegmentationEvaluator(["a", "b", "c"])
    ev.update(*_hand_case())
    before, metrics = ev.matrix.clone(), ev.compute()
    assert not dist_utils.is_distributed()
    ev.gather()
    assert torch.equal(ev.matrix, before) and ev.compute() == metrics
    # The distributed branch (all_reduce on gloo) with a one-rank group: the sum over one rank is itself.
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ev.gather()
    finally:
        dist.destroy_process_group()
    assert torch.equal(ev.matrix, before) and ev.matrix.device.type == "cpu"
    ev.reset()
    assert ev.matrix.sum() == 0 and ev.matrix.shape == (3, 3)


def test_write_report_files(tmp_path):
    ev = SegmentationEvaluator(["a", "b", "c", "d"])  # d is absent
    ev.update(*_hand_case())
    ev.write_report(tmp_path / "run")
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "per_class_iou.csv")))
    assert [r["class"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[1] == {"class": "b", "IoU": "0.6000", "Dice": "0.7500", "acc": "1.0000",
                       "gt_pixels": "3", "pred_pixels": "5"}
    assert rows[3]["IoU"] == rows[3]["Dice"] == rows[3]["acc"] == "absent"
    matrix = list(csv.reader(open(run / "confusion_matrix.csv")))
    assert matrix[0] == ["true\\predicted", "a", "b", "c", "d"]
    assert [[int(x) for x in row[1:]] for row in matrix[1:]] == ev.matrix.tolist()
    assert json.loads((run / "metrics.json").read_text()) == ev.compute()
    protocol = (run / "protocol.md").read_text()
    for key in ("mIoU", "mDice", "pixel_acc", "mean_acc", "fwIoU"):
        assert f"**{key}**" in protocol
    assert "255" in protocol and "absent" in protocol and "Absent classes: d." in protocol
    png = run / "plots" / "per_class_iou.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
