"""Face verification on pairs (the LFW protocol as insightface runs it) and rank-1 identification.

Procedure of insightface ``recognition/arcface_torch/eval/verification.py`` (itself facenet's LFW code):

* Both embeddings of a pair are L2-normalised; the score is their squared L2 distance ``d2`` (in [0, 4]),
  and a pair is called "same person" when ``d2 < t`` (strict) for a threshold ``t``.
* ``verif_acc``: the pairs, in the given order, are cut into ``folds`` consecutive folds
  (``KFold(folds, shuffle=False)``; LFW's pairs.txt lists its ten folds in this order). For each fold the
  threshold among ``0, 0.01, ..., 3.99`` most accurate on the other folds (the first one on ties) is
  applied to the held-out fold. ``verif_acc`` / ``verif_acc_std`` are the mean and the population standard
  deviation (``np.std``) of the held-out accuracies (``calculate_roc`` / ``calculate_accuracy``).
* ``verif_threshold`` is the mean of the chosen ``t``, reported as a cosine similarity ``1 - t / 2``
  (for unit vectors ``d2 = 2 - 2 cos``), because users compare cosines: "same person" <=> cosine > it.
* ``tar_at_far_1e-3`` / ``tar_at_far_1e-4`` (``calculate_val`` / ``calculate_val_far``): per fold, the false
  accept rate of the other folds is computed at ``t = 0, 0.001, ..., 3.999`` and the threshold giving the
  target FAR is interpolated linearly (0 when the target FAR is never reached); the true-accept rate of the
  held-out fold at that threshold, averaged over folds. Each is reported only when there are at least
  ``1 / FAR`` different-person pairs in all (1000 for 1e-3, 10000 for 1e-4): with fewer, a single false
  accept already exceeds the target.
* ``roc_auc``, ``fpr``, ``tpr``: scikit-learn on the cosine similarities of all pairs (no folds).

Where we differ from insightface's code:

* insightface interpolates with ``scipy.interpolate.interp1d(far, thresholds, kind="slinear")``. FAR is
  flat over many thresholds, and current SciPy (1.17 here) refuses repeated x values ("Expect x to not
  have duplicates"), so that line no longer runs; older SciPy built the degree-1 spline with knots
  ``[x0, x..., xn]``, which between the last threshold whose FAR is <= the target and the next one is the
  straight line ``np.interp`` draws. ``np.interp`` equals that spline up to rounding (the tests compare
  them through ``scipy.interpolate.BSpline``) except in one corner: a target FAR equal to the largest FAR of
  the train folds, reached on a plateau at the end of the grid. The old spline's last interval was then
  empty and gave 0.0; ``np.interp`` gives the last threshold.
* insightface divides by zero in ``calculate_val_far`` when a held-out fold has no same-person pair or the
  other folds have no different-person pair; we leave such folds out of the TAR mean (and the key out
  when no fold is left). Accuracy folds with a single kind of pair are scored as insightface does.
* Counting is done by binary search on sorted distances instead of a loop over thresholds: the same
  integer counts, so the same floats, in O(N log N).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import KFold

from ...errors import ConfigError, DataError

ACC_THRESHOLDS = np.arange(0, 4, 0.01)  # calculate_roc's grid of squared distances (evaluate())
VAL_THRESHOLDS = np.arange(0, 4, 0.001)  # calculate_val's finer grid
TAR_FARS = {"tar_at_far_1e-3": 1e-3, "tar_at_far_1e-4": 1e-4}


@dataclass
class VerificationResult:
    """What :func:`verify` measured.

    Attributes:
        metrics: ``verif_acc``, ``verif_acc_std``, ``verif_threshold`` (a cosine similarity), ``roc_auc``,
            ``tar_at_far_1e-3`` / ``tar_at_far_1e-4`` (only with >= 1e3 / 1e4 different-person pairs),
            ``num_pairs``; all floats.
        similarity: (N,) cosine similarity of each pair, in input order.
        same: (N,) bool, the pairs' ground truth.
        fpr, tpr: the ROC curve of ``similarity`` (``sklearn.metrics.roc_curve``).
        fold_accuracy: (folds,) held-out accuracy of each fold.
    """

    metrics: dict[str, float]
    similarity: np.ndarray
    same: np.ndarray
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    fold_accuracy: np.ndarray = field(repr=False)


def _as_embeddings(x, what: str) -> np.ndarray:
    """(N, D) float64, rows L2-normalised (a zero row stays zero, as sklearn's ``normalize`` leaves it)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{what} must be a non-empty (N, D) array of embeddings, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{what} holds {int((~np.isfinite(x)).any(axis=1).sum())} embeddings with NaN or inf values")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _as_same(same, n: int) -> np.ndarray:
    if isinstance(same, torch.Tensor):
        same = same.detach().cpu().numpy()
    same = np.asarray(same).reshape(-1)
    if len(same) != n:
        raise DataError(f"{len(same)} same/different labels for {n} pairs")
    if same.dtype != bool:
        values = set(np.unique(same).tolist())
        if not values <= {0, 1}:
            raise DataError(f"same/different labels must be booleans or 0/1, got values {sorted(values)[:10]}")
        same = same.astype(bool)
    return same


def _split(n: int, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays; one fold trains and tests on everything (insightface's ``LFold``)."""
    indices = np.arange(n)
    if folds == 1:
        return [(indices, indices)]
    return list(KFold(n_splits=folds, shuffle=False).split(indices))


def _counts_below(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold, how many values are strictly below it (``np.less(dist, t)`` summed)."""
    return np.searchsorted(sorted_values, thresholds, side="left")


def _accuracy(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """calculate_accuracy's acc for every threshold: (true accepts + true rejects) / pairs."""
    accepted_same = _counts_below(np.sort(dist[same]), thresholds)
    accepted_diff = _counts_below(np.sort(dist[~same]), thresholds)
    true_rejects = (~same).sum() - accepted_diff
    return (accepted_same + true_rejects) / dist.size


def _tar_at_far(dist: np.ndarray, same: np.ndarray, splits, far_target: float) -> float | None:
    """calculate_val's mean TAR over the folds where it is defined (module docstring); None if none is."""
    tars = []
    for train, test in splits:
        train_diff = np.sort(dist[train][~same[train]])
        test_same = same[test]
        if train_diff.size == 0 or not test_same.any():
            continue
        far_train = _counts_below(train_diff, VAL_THRESHOLDS) / train_diff.size
        threshold = float(np.interp(far_target, far_train, VAL_THRESHOLDS)) if far_train.max() >= far_target else 0.0
        tars.append(np.less(dist[test][test_same], threshold).sum() / test_same.sum())
    return float(np.mean(tars)) if tars else None


def verify(embeddings_a, embeddings_b, same, folds: int = 10) -> VerificationResult:
    """Score pairs of embeddings with the LFW / insightface protocol (module docstring).

    Args:
        embeddings_a, embeddings_b: (N, D) numpy arrays or tensors, the first and second embedding of each
            pair (flip-summed by the caller if wanted); normalised here.
        same: (N,) bools (or 0/1): whether the pair shows one person.
        folds: cross-validation folds (10 in LFW), consecutive in the given order; 1 fits and scores the
            threshold on all pairs.

    Raises:
        DataError: shapes that differ, fewer pairs than folds, no same-person or no different-person pair,
            non-finite embeddings.
        ConfigError: ``folds`` < 1.
    """
    if int(folds) != folds or folds < 1:
        raise ConfigError(f"verification folds must be an integer >= 1, got {folds!r}")
    folds = int(folds)
    a = _as_embeddings(embeddings_a, "embeddings_a")
    b = _as_embeddings(embeddings_b, "embeddings_b")
    if a.shape != b.shape:
        raise DataError(f"the two sides of the pairs differ in shape: {a.shape} and {b.shape}")
    n = a.shape[0]
    same = _as_same(same, n)
    if n < folds:
        raise DataError(f"{n} pairs cannot be split into {folds} folds")
    num_same = int(same.sum())
    if num_same == 0 or num_same == n:
        raise DataError(f"verification needs both same-person and different-person pairs, got {num_same} same "
                        f"and {n - num_same} different")

    dist = np.sum(np.square(a - b), axis=1)
    similarity = 1.0 - dist / 2.0
    splits = _split(n, folds)
    fold_accuracy = np.zeros(folds)
    best_thresholds = np.zeros(folds)
    for k, (train, test) in enumerate(splits):
        best = int(np.argmax(_accuracy(dist[train], same[train], ACC_THRESHOLDS)))  # first max on ties
        best_thresholds[k] = ACC_THRESHOLDS[best]
        fold_accuracy[k] = _accuracy(dist[test], same[test], ACC_THRESHOLDS[best:best + 1])[0]

    metrics = {
        "verif_acc": float(np.mean(fold_accuracy)),
        "verif_acc_std": float(np.std(fold_accuracy)),
        "verif_threshold": float(1.0 - np.mean(best_thresholds) / 2.0),
        "roc_auc": float(roc_auc_score(same, similarity)),
    }
    for key, far in TAR_FARS.items():
        if n - num_same >= round(1 / far):
            tar = _tar_at_far(dist, same, splits, far)
            if tar is not None:
                metrics[key] = tar
    metrics["num_pairs"] = float(n)
    fpr, tpr, _ = roc_curve(same, similarity)
    return VerificationResult(metrics, similarity, same, fpr, tpr, fold_accuracy)


def rank1_accuracy(gallery, gallery_labels, probes, probe_labels, chunk: int = 4096) -> float:
    """Fraction of probes whose most similar gallery embedding (cosine; the first one on ties) has the
    probe's label. Embeddings (G, D) / (P, D), numpy or torch, normalised here; labels (G,) / (P,).

    Raises:
        DataError: an empty gallery or probe set, mismatched dimensions or label counts.
    """
    g = _as_embeddings(gallery, "gallery")
    p = _as_embeddings(probes, "probes")
    if g.shape[1] != p.shape[1]:
        raise DataError(f"gallery embeddings have {g.shape[1]} dimensions, probes {p.shape[1]}")
    g_labels = np.asarray(gallery_labels.cpu() if isinstance(gallery_labels, torch.Tensor) else gallery_labels)
    p_labels = np.asarray(probe_labels.cpu() if isinstance(probe_labels, torch.Tensor) else probe_labels)
    if g_labels.shape != (len(g),) or p_labels.shape != (len(p),):
        raise DataError(f"labels {g_labels.shape} / {p_labels.shape} do not match {len(g)} gallery and "
                        f"{len(p)} probe embeddings")
    correct = 0
    for start in range(0, len(p), chunk):  # bounded (chunk, G) similarity blocks
        nearest = np.argmax(p[start:start + chunk] @ g.T, axis=1)
        correct += int(np.sum(g_labels[nearest] == p_labels[start:start + chunk]))
    return correct / len(p)
