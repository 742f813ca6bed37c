"""Face's result object: the embedding of one image's face."""

from __future__ import annotations

import numpy as np

from ..result import Result


class FaceResult(Result):
    """``r.embedding``: the L2-normalised embedding (None where no face was found: ``r["error"]``);
    ``r.similarity(other)``: cosine similarity with another result's face; with a gallery, ``r["identity"]``; for a
    call on exactly two images, ``r["pair"]`` (similarity, threshold, same person)."""

    picture = "face"

    @property
    def embedding(self) -> np.ndarray | None:
        return np.asarray(self["embedding"], dtype=np.float32) if "embedding" in self else None

    def similarity(self, other: "FaceResult") -> float:
        """Cosine similarity of the two faces' embeddings (what the verification threshold applies to)."""
        if self.embedding is None or other.embedding is None:
            missing = self if self.embedding is None else other
            raise ValueError(f"{missing.image}: no face was found, so it has no embedding")
        return float(self.embedding @ other.embedding)

    def caption(self) -> list[str]:
        if "error" in self:
            return [self["error"]]
        lines = []
        if "identity" in self:
            lines.append(f"{self['identity']} ({self['identity_similarity']:.2f})")
        if "pair" in self:
            pair = self["pair"]
            verdict = "" if pair["same"] is None else (" same person" if pair["same"] else " different people")
            lines.append(f"pair similarity {pair['similarity']:.2f}{verdict}")
        return lines or [f"embedding of {len(self['embedding'])} values"]
