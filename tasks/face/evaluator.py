"""Face evaluation: LFW-protocol verification of pairs and rank-1 identification, from one embedding per image.

The validation set (:class:`~resvision.datasets.face.FaceEvalSet`) lists each *image* once; pairs and the
gallery / probe split refer to images by index. The evaluator keeps the flip-summed, normalised embedding
of every image (gathered across ranks, each image once) and scores pairs and probes at the end, so an
image shared by several LFW pairs is embedded once.
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

from ...reports import save_figure, save_image_grid  # noqa: E402
from ..base import Evaluator  # noqa: E402
from .verification import TAR_FARS, VerificationResult, rank1_accuracy, verify  # noqa: E402

PROTOCOL = """# Face evaluation protocol

**Embeddings.** Each image is embedded twice, as given and mirrored left-right; the two embeddings are summed
and L2-normalised (insightface `eval/verification.py`, facenet). Similarity = cosine of two such embeddings.

**verif_acc** (± **verif_acc_std**): the LFW 10-fold protocol as insightface's `calculate_roc`. The pairs, in file
order, are cut into 10 consecutive folds (`KFold(10, shuffle=False)`: LFW's pairs.txt lists its folds in
this order). For each fold, the distance threshold (squared L2 distance of the normalised embeddings,
thresholds 0, 0.01, ..., 3.99) that is most accurate on the other nine folds is applied to the held-out fold;
verif_acc is the mean of the ten held-out accuracies, verif_acc_std their standard deviation.
**verif_threshold**: the mean of the ten chosen thresholds, given as a cosine similarity (1 − d²/2): two
faces whose similarity is above this are called the same person (`predict` uses it).
**roc_auc**: area under the ROC curve of the cosine similarity over all pairs.
**tar_at_far_1e-3 / 1e-4**: true-accept rate at that false-accept rate (insightface's `calculate_val`),
reported only when there are enough different-person pairs to measure that rate.
**rank1**: identification: the first image (by name) of each gallery identity is its gallery entry, every
other image is a probe; rank-1 accuracy = the fraction of probes whose most similar gallery entry is their
own identity.
"""


class FaceEvaluator(Evaluator):
    """Collects per-image embeddings and scores the eval set's pairs and probes.

    Args:
        eval_set: The validation :class:`~resvision.datasets.face.FaceEvalSet` (pairs, gallery labels).
        data: The run's :class:`~resvision.tasks.face.task.FaceDataInfo`; ``compute`` records the threshold it
            found there, so the checkpoint written after this evaluation carries it for ``predict``.
    """

    state_fields = ("embeddings", "indices")

    def __init__(self, eval_set, data=None) -> None:
        self.eval_set = eval_set
        self.data = data
        self.result: VerificationResult | None = None
        super().__init__()

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        self.embeddings.extend(predictions.detach().float().cpu().numpy())
        self.indices.extend(int(i) for i in targets)

    def metric_names(self) -> set[str]:
        names = set()
        if len(self.eval_set.pairs):
            names |= {"verif_acc", "verif_acc_std", "verif_threshold", "roc_auc", *TAR_FARS, "num_pairs"}
        if len(self.eval_set.gallery) and len(self.eval_set.probes):
            names |= {"rank1", "num_probes"}
        return names

    def _by_index(self) -> np.ndarray:
        count = len(self.eval_set)
        if sorted(self.indices) != list(range(count)):
            raise ValueError(f"expected one embedding per image of the eval set ({count}), got {len(self.indices)}")
        out = np.empty((count, len(self.embeddings[0])), dtype=np.float32)
        out[np.asarray(self.indices)] = np.stack(self.embeddings)
        return out

    def compute(self) -> dict[str, float]:
        emb = self._by_index()
        metrics: dict[str, float] = {}
        pairs = self.eval_set.pairs
        if len(pairs):
            self.result = verify(emb[pairs[:, 0]], emb[pairs[:, 1]], pairs[:, 2].astype(bool))
            metrics.update(self.result.metrics)
            if self.data is not None:
                self.data.threshold = float(self.result.metrics["verif_threshold"])
        gallery, probes = self.eval_set.gallery, self.eval_set.probes
        if len(gallery) and len(probes):
            labels = self.eval_set.identity
            metrics["rank1"] = rank1_accuracy(emb[gallery], labels[gallery], emb[probes], labels[probes])
            metrics["num_probes"] = float(len(probes))
        return metrics

    def write_report(self, run_dir: str | Path) -> None:
        """metrics.json, protocol.md, pair_scores.csv, plots/roc.png, plots/similarity_histogram.png,
        plots/hardest_pairs.png."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = self.compute()
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (run_dir / "protocol.md").write_text(PROTOCOL)
        r = self.result
        if r is None:
            return
        pairs = self.eval_set.pairs
        with open(run_dir / "pair_scores.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image_a", "image_b", "same", "similarity"])
            for (a, b, same), s in zip(pairs, r.similarity):
                writer.writerow([self.eval_set.name(a), self.eval_set.name(b), int(same), f"{s:.6f}"])
        plots = run_dir / "plots"
        self._plot_roc(r, plots / "roc.png")
        self._plot_histogram(r, plots / "similarity_histogram.png")
        self._hardest_pairs(r, plots / "hardest_pairs.png")

    @staticmethod
    def _plot_roc(r: VerificationResult, path: Path) -> None:
        # Log-scale FAR, as face verification ROCs are read (TAR at FAR 1e-3 ...): a linear axis squeezes
        # every useful operating point against x = 0. It starts at one false accept among the different pairs.
        low = 1.0 / max(1, int((~r.same).sum()))
        fig, ax = plt.subplots(figsize=(5, 4.5))
        ax.step(np.maximum(r.fpr, low), r.tpr, where="post", lw=1.5)
        ax.set_xscale("log")
        ax.set(xlabel="false accept rate (log scale)", ylabel="true accept rate", xlim=(low, 1), ylim=(0, 1.01),
               title=f"ROC, {r.metrics['num_pairs']:.0f} pairs: AUC {r.metrics['roc_auc']:.4f}, "
                     f"10-fold acc {r.metrics['verif_acc']:.4f}")
        ax.grid(alpha=0.3)
        save_figure(fig, path)

    @staticmethod
    def _plot_histogram(r: VerificationResult, path: Path) -> None:
        fig, ax = plt.subplots(figsize=(6, 4))
        bins = np.linspace(-1, 1, 81)
        ax.hist(r.similarity[r.same], bins=bins, alpha=0.6, label="same person", color="tab:green")
        ax.hist(r.similarity[~r.same], bins=bins, alpha=0.6, label="different people", color="tab:red")
        ax.axvline(r.metrics["verif_threshold"], c="k", ls="--", lw=1,
                   label=f"threshold {r.metrics['verif_threshold']:.3f}")
        ax.set(xlabel="cosine similarity", ylabel="pairs", title="Pair similarities")
        ax.legend()
        save_figure(fig, path)

    def _hardest_pairs(self, r: VerificationResult, path: Path, count: int = 8) -> None:
        """Same-person pairs with the lowest similarity and different-person pairs with the highest,
        side by side: what the model confuses."""
        pairs, threshold = self.eval_set.pairs, r.metrics["verif_threshold"]
        same_idx = np.flatnonzero(r.same)
        diff_idx = np.flatnonzero(~r.same)
        picks = [*same_idx[np.argsort(r.similarity[same_idx], kind="stable")][:count // 2],
                 *diff_idx[np.argsort(-r.similarity[diff_idx], kind="stable")][:count // 2]]
        images, captions = [], []
        for k in picks:
            a, b, same = pairs[k]
            left, right = self.eval_set.image(a), self.eval_set.image(b)
            height = max(left.shape[0], right.shape[0])
            images.append(np.concatenate([_pad_to(left, height), _pad_to(right, height)], axis=1))
            verdict = "same" if r.similarity[k] > threshold else "different"
            captions.append(f"{'same' if same else 'different'} people, sim {r.similarity[k]:.3f} -> {verdict}")
        save_image_grid(images, captions, path, "Hardest pairs: least similar same-person pairs, most similar "
                        "different-person pairs", cols=4)


def _pad_to(image: np.ndarray, height: int) -> np.ndarray:
    if image.shape[0] == height:
        return image
    pad = np.zeros((height - image.shape[0], *image.shape[1:]), dtype=image.dtype)
    return np.concatenate([image, pad], axis=0)
