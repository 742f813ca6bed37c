"""LFW-protocol verification: a 20-pair case worked out by hand for 2, 4 and 10 folds, a loop-based
re-implementation of insightface's calculate_roc / calculate_val as the reference on random embeddings,
separable data, scikit-learn's ROC, TAR@FAR by hand, rank-1 by hand, and the one-line errors."""

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline
from sklearn.metrics import roc_auc_score, roc_curve

from resvision.errors import ConfigError, DataError
from resvision.tasks.face.verification import rank1_accuracy, verify


def _pairs_from_d2(d2, rng=None):
    """2-D embedding pairs whose normalised squared distance is ``d2``: a = (1, 0), b at angle phi with
    cos(phi) = 1 - d2 / 2; both rescaled by arbitrary factors (verify must normalise)."""
    d2 = np.asarray(d2, dtype=np.float64)
    phi = np.arccos(1 - d2 / 2)
    rng = rng or np.random.default_rng(0)
    a = np.stack([np.ones_like(phi), np.zeros_like(phi)], axis=1) * rng.uniform(0.2, 5, (len(d2), 1))
    b = np.stack([np.cos(phi), np.sin(phi)], axis=1) * rng.uniform(0.2, 5, (len(d2), 1))
    return a, b


# 20 pairs in file order: (squared distance, same person). Distances sit halfway between the 0.01 grid
# points, so "d2 < t" is never a tie. Outliers: #5 and #15 are different people but close, #8 is the same
# person but far.
HAND_D2 = np.array([0.10, 1.50, 0.20, 1.60, 0.30, 0.95, 0.40, 1.70, 1.20, 1.80,
                    0.50, 1.90, 0.60, 2.00, 0.70, 0.80, 0.90, 2.10, 1.00, 2.20]) + 0.005
HAND_SAME = np.array([True, False] * 10)
# Working by hand. Sorted by distance, with +1 for a same pair and -1 for a different pair:
#   0.105 S#0  0.205 S#2  0.305 S#4  0.405 S#6  0.505 S#10  0.605 S#12  0.705 S#14 | 0.805 D#15 | 0.905 S#16 |
#   0.955 D#5 | 1.005 S#18 | 1.205 S#8 | 1.505 D#1 ... 2.205 D#19 (all different from here on)
# Train accuracy at t = (#different train pairs + sum of the steps of train pairs with d2 < t) / n_train, so
# only the cuts C1..C4 (marked |) can win: summed over all 20 pairs the steps below them are G = (7, 7, 7, 8).
# For a held-out set H with step sum h(C) below each cut, the train score is G - h; the chosen threshold is
# the first 0.01 grid point above the largest *train* distance below the winning cut (first argmax).
HAND_CASES = {
    # folds=2. H = #0-9: h = (4, 4, 3, 4) [S#0,2,4,6 below C1; D#5 below C3; S#8 below C4] -> train (3,3,4,4)
    #   -> C3, t = 1.01 (above S#18 1.005). Test #0-9: S#0,2,4,6 accepted, S#8 1.205 rejected (wrong),
    #   D#5 0.955 accepted (wrong), D#1,3,7,9 rejected -> 8/10.
    # H = #10-19: h = (3, 3, 4, 4) [S#10,12,14; D#15 -1 and S#16 +1 below C2; S#18 below C3] -> train
    #   (4,4,3,4) -> C1, but the largest train distance below C1 is S#6 0.405, so t = 0.41. Test #10-19:
    #   every distance is >= 0.505 -> all rejected: the 5 different right, the 5 same wrong -> 5/10.
    # acc = (0.8 + 0.5)/2 = 0.65, std = 0.15; threshold mean (1.01 + 0.41)/2 = 0.71 -> cosine 1 - 0.355.
    2: ([0.8, 0.5], 0.65, 0.15, 1 - 0.71 / 2),
    # folds=4 (5 pairs each). #0-4: h = (3,3,3,3) -> train (4,4,4,5) -> C4, t = 1.21; S below, D above: 5/5.
    # #5-9: h = (1,1,0,1) [S#6; D#5 below C3; S#8 below C4] -> train (6,6,7,7) -> C3, t = 1.01; test:
    #   D#5 0.955 accepted (wrong), S#6 right, S#8 1.205 rejected (wrong), D#7, D#9 right -> 3/5.
    # #10-14: h = (3,3,3,3) -> C4, t = 1.21 -> 5/5.
    # #15-19: h = (0,0,1,1) [D#15 and S#16 cancel below C2; S#18 below C3] -> train (7,7,6,7) -> C1,
    #   t = 0.71 (above S#14 0.705); test: D#15 0.805 right, S#16 0.905 and S#18 1.005 rejected (wrong),
    #   D#17, D#19 right -> 3/5.
    # acc = (1 + 0.6 + 1 + 0.6)/4 = 0.8, std 0.2; thresholds (1.21 + 1.01 + 1.21 + 0.71)/4 = 1.035.
    4: ([1.0, 0.6, 1.0, 0.6], 0.8, 0.2, 1 - 1.035 / 2),
    # folds=10: fold k holds #2k (same) and #2k+1 (different).
    # Folds 0, 1, 3, 5, 6: S below C1, D above C4 -> h = (1,1,1,1) -> train (6,6,6,7) -> C4, t = 1.21 -> 2/2.
    # Fold 2 (S#4 0.305, D#5 0.955): h = (1,1,0,0) -> train (6,6,7,8) -> t = 1.21 -> D#5 accepted -> 1/2.
    # Fold 4 (S#8 1.205, D#9): h = (0,0,0,1) -> train (7,7,7,7) -> C1, t = 0.71 -> S#8 rejected -> 1/2.
    # Fold 7 (S#14 0.705, D#15 0.805): h = (1,0,0,0) -> train (6,7,7,8) -> t = 1.21 -> D#15 accepted -> 1/2.
    # Fold 8 (S#16 0.905, D#17): h = (0,1,1,1) -> train (7,6,6,7) -> C1, t = 0.71 -> S#16 rejected -> 1/2.
    # Fold 9 (S#18 1.005, D#19): h = (0,0,1,1) -> train (7,7,6,7) -> C1, t = 0.71 -> S#18 rejected -> 1/2.
    # acc = (5 * 1 + 5 * 0.5)/10 = 0.75, std 0.25; thresholds (7 * 1.21 + 3 * 0.71)/10 = 1.06.
    10: ([1, 1, 0.5, 1, 0.5, 1, 1, 0.5, 0.5, 0.5], 0.75, 0.25, 1 - 1.06 / 2),
}


@pytest.mark.parametrize("folds", sorted(HAND_CASES))
def test_hand_computed_folds(folds):
    fold_acc, acc, std, threshold = HAND_CASES[folds]
    a, b = _pairs_from_d2(HAND_D2)
    r = verify(a, b, HAND_SAME, folds=folds)
    np.testing.assert_allclose(r.fold_accuracy, fold_acc, rtol=0, atol=1e-12)
    assert r.metrics["verif_acc"] == pytest.approx(acc, abs=1e-12)
    assert r.metrics["verif_acc_std"] == pytest.approx(std, abs=1e-12)
    assert r.metrics["verif_threshold"] == pytest.approx(threshold, abs=1e-9)
    assert r.metrics["num_pairs"] == 20.0
    np.testing.assert_allclose(r.similarity, 1 - HAND_D2 / 2, rtol=0, atol=1e-12)
    assert r.same.dtype == bool and (r.same == HAND_SAME).all()
    # Only 10 different-person pairs: too few to measure a FAR of 1e-3 or 1e-4.
    assert set(r.metrics) == {"verif_acc", "verif_acc_std", "verif_threshold", "roc_auc", "num_pairs"}
    assert all(isinstance(v, float) for v in r.metrics.values())


# --- reference: insightface's calculate_roc / calculate_accuracy / calculate_val written out as loops -----

def _ref_folds(n, k):
    """KFold(k, shuffle=False): consecutive folds, the first n % k one pair longer."""
    sizes = [n // k + 1] * (n % k) + [n // k] * (k - n % k)
    bounds = np.cumsum([0] + sizes)
    return [(np.array([i for i in range(n) if not lo <= i < hi]), np.arange(lo, hi))
            for lo, hi in zip(bounds[:-1], bounds[1:])]


def _ref_accuracy(t, dist, same):
    tp = fp = tn = fn = 0
    for d, s in zip(dist, same):
        accepted = d < t
        tp += accepted and s
        fp += accepted and not s
        tn += (not accepted) and not s
        fn += (not accepted) and s
    return float(tp + tn) / len(dist)


def _ref_normalise(x):
    return x / np.sqrt((x * x).sum(axis=1, keepdims=True))


def _ref_roc(a, b, same, k):
    a, b = _ref_normalise(a), _ref_normalise(b)
    dist = np.array([float(np.dot(u - v, u - v)) for u, v in zip(a, b)])
    thresholds = np.arange(0, 4, 0.01)
    accs, best = [], []
    for train, test in _ref_folds(len(dist), k):
        train_acc = [_ref_accuracy(t, dist[train], same[train]) for t in thresholds]
        i = train_acc.index(max(train_acc))  # first maximum
        best.append(thresholds[i])
        accs.append(_ref_accuracy(thresholds[i], dist[test], same[test]))
    return np.array(accs), np.array(best)


def _ref_val(a, b, same, k, far_target):
    """calculate_val with the interpolation older SciPy performed for interp1d(kind="slinear"): the
    degree-1 B-spline with knots [x0, x..., xn] (current SciPy refuses the repeated FAR values)."""
    a, b = _ref_normalise(a), _ref_normalise(b)
    dist = ((a - b) ** 2).sum(axis=1)
    thresholds = np.arange(0, 4, 0.001)
    vals = []
    for train, test in _ref_folds(len(dist), k):
        d_tr, s_tr = dist[train], same[train]
        far_train = np.array([np.logical_and(d_tr < t, ~s_tr).sum() / (~s_tr).sum() for t in thresholds])
        if far_train.max() >= far_target:
            spline = BSpline.construct_fast(np.r_[far_train[0], far_train, far_train[-1]], thresholds.copy(), 1)
            threshold = float(spline(far_target))
            # What verification.py's docstring claims: np.interp draws the same line.
            assert np.interp(far_target, far_train, thresholds) == pytest.approx(threshold, abs=1e-12)
        else:
            threshold = 0.0
        d_te, s_te = dist[test], same[test]
        vals.append(np.logical_and(d_te < threshold, s_te).sum() / s_te.sum())
    return float(np.mean(vals))


def _random_pairs(n, dim, rng, noise):
    same = rng.random(n) < 0.5
    a = rng.normal(size=(n, dim))
    b = np.where(same[:, None], a + noise * rng.normal(size=(n, dim)), rng.normal(size=(n, dim)))
    return a, b, same


@pytest.mark.parametrize("n, folds, noise", [(203, 10, 1.0), (157, 3, 0.7), (60, 10, 2.0)])
def test_random_embeddings_match_loop_reference(n, folds, noise):
    rng = np.random.default_rng(n)
    a, b, same = _random_pairs(n, 8, rng, noise)
    r = verify(a, b, same, folds=folds)
    ref_acc, ref_best = _ref_roc(a, b, same, folds)
    assert 0.6 < r.metrics["verif_acc"] < 1.0  # a real threshold choice, neither trivial nor perfect
    np.testing.assert_array_equal(r.fold_accuracy, ref_acc)
    assert r.metrics["verif_acc"] == float(np.mean(ref_acc))
    assert r.metrics["verif_acc_std"] == pytest.approx(float(np.std(ref_acc)), abs=1e-15)
    assert r.metrics["verif_threshold"] == pytest.approx(1 - float(np.mean(ref_best)) / 2, abs=1e-12)
    # Tensors (float32, as a model gives them) go through the same path.
    rt = verify(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32),
                torch.tensor(same), folds=folds)
    assert rt.metrics["verif_acc"] == pytest.approx(r.metrics["verif_acc"], abs=1.5 / n)


def test_tar_at_far_matches_loop_reference():
    # 2,300 pairs, ~1,150 different: TAR@FAR=1e-3 is reported, 1e-4 (needs 10,000) is not.
    rng = np.random.default_rng(7)
    a, b, same = _random_pairs(2300, 6, rng, 1.2)
    r = verify(a, b, same, folds=10)
    assert "tar_at_far_1e-3" in r.metrics and "tar_at_far_1e-4" not in r.metrics
    expected = _ref_val(a, b, same, 10, 1e-3)
    assert 0.05 < expected < 0.95
    assert r.metrics["tar_at_far_1e-3"] == pytest.approx(expected, abs=1e-12)


def test_separable_pairs():
    # Same-person cosines in [0.6025, 0.9], different-person ones in [-0.2, 0.3]. The first pair of each of the
    # 10 folds is a same pair at cosine 0.6025 (d2 = 0.795), so every fold trains on it and picks the first
    # grid point above it, t = 0.80, i.e. cosine 0.6: between the two groups, every held-out pair right.
    rng = np.random.default_rng(3)
    same = np.array([True, False] * 50)
    cos = np.where(same, rng.uniform(0.62, 0.9, 100), rng.uniform(-0.2, 0.3, 100))
    cos[::10] = 0.6025
    a, b = _pairs_from_d2(2 - 2 * cos, rng)
    r = verify(a, b, same, folds=10)
    assert r.metrics["verif_acc"] == 1.0 and r.metrics["verif_acc_std"] == 0.0
    assert (r.fold_accuracy == 1.0).all()
    assert r.metrics["verif_threshold"] == pytest.approx(0.6, abs=1e-12)
    assert cos[~same].max() < r.metrics["verif_threshold"] < cos[same].min()
    assert r.metrics["roc_auc"] == 1.0


def test_roc_auc_and_curve_equal_scikit_learn():
    rng = np.random.default_rng(11)
    a, b, same = _random_pairs(300, 16, rng, 1.5)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    r = verify(a, b, same)
    assert r.metrics["roc_auc"] == pytest.approx(roc_auc_score(same, cosine), abs=1e-12)
    assert 0.6 < r.metrics["roc_auc"] < 0.99
    fpr, tpr, _ = roc_curve(same, cosine)
    np.testing.assert_allclose(r.fpr, fpr, atol=1e-12)
    np.testing.assert_allclose(r.tpr, tpr, atol=1e-12)
    np.testing.assert_allclose(r.similarity, cosine, atol=1e-12)


def _tar_layout(fold2_same_d2):
    """Two folds of 600 pairs. Each fold: 500 different pairs, one at d2 = 1.0003 and 499 at 3.0005; fold 1
    has 100 same pairs (40 at 0.5, 30 at 1.0002, 30 at 1.0008), fold 2 the given same distances."""
    d_diff = [1.0003] + [3.0005] * 499
    fold1 = ([0.5] * 40 + [1.0002] * 30 + [1.0008] * 30, d_diff)
    fold2 = (fold2_same_d2, d_diff + [3.0005] * (100 - len(fold2_same_d2)))
    d2, same = [], []
    for s, d in (fold1, fold2):
        d2 += s + d
        same += [True] * len(s) + [False] * len(d)
    return np.array(d2), np.array(same)


def test_tar_at_far_hand_case():
    # Each fold trains on the other fold's 500 different pairs: FAR is 0 up to t = 1.000 and 1/500 = 0.002
    # from t = 1.001 (the 1.0003 pair is accepted). Interpolating FAR = 0.001 gives t = 1.0005.
    # Fold 1 test: 40 at 0.5 and 30 at 1.0002 accepted, 30 at 1.0008 rejected -> TAR 70/100.
    # Fold 2 test: 90 at 0.5 accepted, 10 at 2.0 rejected -> TAR 90/100. Mean 0.8.
    d2, same = _tar_layout([0.5] * 90 + [2.0] * 10)
    assert (~same).sum() == 1000
    r = verify(*_pairs_from_d2(d2), same, folds=2)
    assert r.metrics["tar_at_far_1e-3"] == pytest.approx(0.8, abs=1e-12)
    assert "tar_at_far_1e-4" not in r.metrics
    # With 999 different pairs the key is absent (fewer than 1 / FAR).
    r = verify(*_pairs_from_d2(d2[:-1]), same[:-1], folds=2)
    assert "tar_at_far_1e-3" not in r.metrics


def test_tar_at_far_skips_a_fold_without_same_pairs():
    # Fold 2 has only different pairs (600): it has no TAR and is left out of the mean (insightface would
    # divide by zero). Fold 1 trains on fold 2: FAR = 1/600 from t = 1.001, so FAR 0.001 interpolates to
    # t = 1.000 + 0.001 * 0.001 / (1/600) = 1.0006: the 30 pairs at 1.0008 stay rejected -> TAR 0.7.
    d2, same = _tar_layout([])
    r = verify(*_pairs_from_d2(d2), same, folds=2)
    assert r.metrics["tar_at_far_1e-3"] == pytest.approx(0.7, abs=1e-12)


def test_strict_threshold_on_exact_distances_single_fold():
    # Exact distances: identical (d2 = 0), orthogonal (2) and opposite (4) unit vectors. folds=1 fits and
    # scores on all pairs (insightface's LFold). "same" means d2 < t, strictly: at t = 0 nothing is accepted
    # (2/4 right: the two different pairs); from t = 0.01 the identical pair is (3/4); above 2 the orthogonal
    # same pair is gained and the orthogonal different pair lost (3/4). First maximum: t = 0.01.
    a = np.array([[1.0, 0.0]] * 4)
    b = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    same = np.array([True, False, True, False])
    r = verify(a, b, same, folds=1)
    assert r.metrics["verif_acc"] == 0.75
    assert r.metrics["verif_threshold"] == pytest.approx(1 - 0.01 / 2, abs=1e-15)
    np.testing.assert_array_equal(r.similarity, [1.0, 0.0, 0.0, -1.0])


def test_fold_with_one_kind_of_pair_is_scored():
    # Folds=2, the first half all same (d2 0.205), the second all different (d2 1.805). Fold 1 trains on
    # different pairs only: best is t = 0 (reject all), so its same pairs are all rejected -> 0. Fold 2 trains
    # on same pairs: first t accepting them all is 0.21; its different pairs at 1.805 are rejected -> 1.
    same = np.array([True] * 10 + [False] * 10)
    r = verify(*_pairs_from_d2(np.where(same, 0.205, 1.805)), same, folds=2)
    np.testing.assert_allclose(r.fold_accuracy, [0.0, 1.0])
    assert r.metrics["verif_threshold"] == pytest.approx(1 - (0.0 + 0.21) / 2 / 2)


def test_rank1_hand_case():
    gallery = np.array([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0]])
    gallery_labels = np.array(["ann", "bob", "cy"])
    probes = np.array([[2.0, 0.1],     # nearest ann (cos 0.999), is ann: right
                       [0.1, 5.0],     # nearest bob, is bob: right
                       [-1.0, -0.2],   # nearest cy, is ann: wrong
                       [6.0, 5.0]])    # cos to ann 6/7.81 = 0.768 > to bob 5/7.81 = 0.640: ann, is bob: wrong
    labels = np.array(["ann", "bob", "ann", "bob"])
    assert rank1_accuracy(gallery, gallery_labels, probes, labels) == 0.5
    # Norms do not matter (cosine); chunking does not change the answer; tensors are accepted.
    assert rank1_accuracy(gallery * 9, gallery_labels, probes / 7, labels, chunk=1) == 0.5
    assert rank1_accuracy(torch.tensor(gallery), torch.tensor([0, 1, 2]), torch.tensor(probes),
                          torch.tensor([0, 1, 0, 0])) == 0.75


def test_errors_are_one_line():
    a, b = _pairs_from_d2(HAND_D2)
    cases = [
        (lambda: verify(a, b[:-1], HAND_SAME), DataError, "differ in shape"),
        (lambda: verify(a, b, HAND_SAME[:-1]), DataError, "19 same/different labels for 20 pairs"),
        (lambda: verify(a[:5], b[:5], HAND_SAME[:5], folds=10), DataError, "5 pairs cannot be split into 10"),
        (lambda: verify(a, b, np.ones(20, bool)), DataError, "20 same and 0 different"),
        (lambda: verify(a, b, np.zeros(20, bool)), DataError, "0 same and 20 different"),
        (lambda: verify(a, b, np.arange(20)), DataError, "booleans or 0/1"),
        (lambda: verify(np.full_like(a, np.nan), b, HAND_SAME), DataError, "NaN or inf"),
        (lambda: verify(a, b, HAND_SAME, folds=0), ConfigError, "folds"),
        (lambda: rank1_accuracy(a, np.arange(19), b, np.arange(20)), DataError, "do not match"),
        (lambda: rank1_accuracy(a, np.arange(20), np.ones((3, 4)), np.arange(3)), DataError, "dimensions"),
    ]
    for call, error, text in cases:
        with pytest.raises(error, match=text) as info:
            call()
        assert "\n" not in str(info.value)
    # 0/1 integers are accepted as labels.
    assert verify(a, b, HAND_SAME.astype(int), folds=2).metrics["verif_acc"] == pytest.approx(0.65)
