"""Classification's result object: the top-k classes of one image."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..result import Result


class ClassificationResult(Result):
    """``r["topk"]``: ``[{"label", "index", "prob"}]``, best first; ``r.label`` / ``r.score`` (the best class and
    its probability), ``r.top5`` (``(label, prob)`` pairs), ``r.probs`` (every class's probability)."""

    picture = "label"

    def __init__(self, record: dict[str, Any], source: Any, probs: np.ndarray) -> None:
        super().__init__(record, source)
        self.probs = probs

    @property
    def label(self) -> str:
        return self["topk"][0]["label"]

    @property
    def score(self) -> float:
        return self["topk"][0]["prob"]

    @property
    def index(self) -> int:
        return self["topk"][0]["index"]

    @property
    def top5(self) -> list[tuple[str, float]]:
        return [(t["label"], t["prob"]) for t in self["topk"][:5]]

    def caption(self) -> list[str]:
        return [", ".join(f"{label} {prob:.2f}" for label, prob in self.top5[:3])]
