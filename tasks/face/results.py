"""Face's prediction part: the result object (the embedding of one image's face) and :class:`FacePrediction`, the
task's ``predict`` (embeddings, pair verification, identification against a gallery)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ...datasets import as_rgb, identity_folder_samples, image_label
from ...errors import DataError
from ..options import BUILTIN_PREDICT_OPTIONS
from ..result import Result
from .model import flip_embeddings

if TYPE_CHECKING:
    from .task import FaceDataInfo

log = logging.getLogger("resvision")


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


class FacePrediction:
    """Face's prediction members, mixed into ``FaceTask``; uses the core's ``transforms`` (evaluation's)."""

    predict_options = BUILTIN_PREDICT_OPTIONS["face"]

    @torch.inference_mode()
    def predict(self, model: nn.Module, paths: list[Any], data: FaceDataInfo, device: torch.device,
                threshold: float | None = None,
                gallery: str | None = None) -> list[dict[str, Any]]:
        """A ``FaceResult`` per image (a file, or any image ``datasets.as_rgb`` takes; aligned first with
        ``data.align``): its face's ``embedding`` (``.similarity(other)``). For exactly two images, also their cosine similarity and the same / different decision at ``threshold`` (default: the checkpoint's
        verif_threshold); with ``gallery``, the most similar known person of each face (the mean embedding of
        that person's gallery images), or ``unknown`` below the threshold."""
        threshold = data.threshold if threshold is None else threshold
        faces, results = self._faces(paths)
        emb = self._embed(model, [face for _, face in faces], device)
        for (i, _), e in zip(faces, emb):
            results[i]["embedding"] = e.round(6).tolist()
        if gallery is not None:
            people, centres = self._gallery(model, gallery, device)
            for (i, _), e in zip(faces, emb):
                scores = centres @ e
                best = int(scores.argmax())
                known = threshold is None or scores[best] > threshold
                results[i]["identity"] = people[best] if known else "unknown"
                results[i]["identity_similarity"] = round(float(scores[best]), 6)
                results[i]["nearest"] = people[best]
        if len(paths) == 2 and len(faces) == 2:
            similarity = float(emb[0] @ emb[1])
            pair = {"similarity": round(similarity, 6), "threshold": threshold,
                    "same": None if threshold is None else similarity > threshold}
            for r in results:
                r["pair"] = pair
        return results

    def _embed(self, model: nn.Module, faces: list[np.ndarray], device: torch.device, batch_size: int = 32) -> np.ndarray:
        transform = self.transforms(False)
        out = [np.zeros((0, self.cfg.model.embedding_size), np.float32)]
        for start in range(0, len(faces), batch_size):
            images = torch.stack([transform(face) for face in faces[start:start + batch_size]]).to(device)
            out.append(flip_embeddings(model, images).cpu().numpy())
        return np.concatenate(out)

    def _gallery(self, model: nn.Module, folder: str, device: torch.device) -> tuple[list[str], np.ndarray]:
        """Names of the gallery's people and their normalised mean embeddings."""
        samples, people = identity_folder_samples(folder)
        faces, _ = self._faces([path for path, _ in samples])
        emb = self._embed(model, [face for _, face in faces], device)
        labels = np.array([samples[i][1] for i, _ in faces], dtype=np.int64)
        found = [k for k in range(len(people)) if (labels == k).any()]
        if len(found) < len(people):
            log.warning("--gallery: no face found for %d of %d people, left out", len(people) - len(found), len(people))
        if not found:
            raise DataError(f"--gallery {folder}: no face found in any image")
        centres = np.stack([emb[labels == k].mean(0) for k in found])
        return [people[k] for k in found], centres / np.linalg.norm(centres, axis=1, keepdims=True)

    def _faces(self, paths: list[Any]) -> tuple[list[tuple[int, np.ndarray]], list[FaceResult]]:
        """``(result index, face pixels)`` for each image with a face, and one result dict per image; with
        ``data.align`` the largest face is detected and aligned, an image without a face is listed, not fatal."""
        results = [FaceResult({"image": image_label(p, i)}, p) for i, p in enumerate(paths)]
        aligner = None
        if self.cfg.data.align:
            from .align import FaceAligner

            aligner = FaceAligner(size=self.cfg.data.image_size)
        faces = []
        for i, path in enumerate(paths):
            image = as_rgb(path)
            face = aligner.align(image) if aligner is not None else image
            if face is None:
                results[i]["error"] = "no face found"
                log.warning("%s: no face found, skipped", results[i]["image"])
                continue
            faces.append((i, face))
        return faces, results
