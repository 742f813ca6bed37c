"""Face recognition task: ArcFace / CosFace training on identity folders, LFW-protocol verification.

Training is closed-set classification of the training identities through a margin head; evaluation never
uses those classes: it embeds held-out faces (image + mirror, summed, normalised) and scores pairs with
the 10-fold LFW protocol (``verification.py``), plus rank-1 identification when a gallery folder is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...backbone import build_backbone_from_config
from ...config import BackboneConfig
from ...datasets import (ClassificationDataset, FaceEvalSet, face_transforms, identity_folder_samples, read_image,
                         synthetic_faces_dataset)
from ...errors import ConfigError
from ..base import DataInfo, Task, TaskOption
from .evaluator import FaceEvaluator
from .margin import build_margin
from .model import FaceModel, flip_embeddings

log = logging.getLogger("resvision")

_DEFAULT_M = {"arcface": 0.5, "cosface": 0.35, "combined": 0.5}


@dataclass
class FaceModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int | None = field(default=None, metadata={"ge": 1})  # None: the training identities
    embedding_size: int = field(default=512, metadata={"ge": 2})
    dropout: float = field(default=0.0, metadata={"ge": 0, "lt": 1})
    margin: Literal["arcface", "cosface", "combined"] = "arcface"
    scale: float = field(default=64.0, metadata={"gt": 0})  # s: the logit scale
    # m: ArcFace's additive angle (0.5), CosFace's cosine subtraction (0.35), the combined margin's m2.
    m: float | None = field(default=None, metadata={"ge": 0})  # None: the margin's usual value
    m1: float = field(default=1.0, metadata={"gt": 0})  # combined margin: cos(m1 * theta + m) - m3
    m3: float = field(default=0.0, metadata={"ge": 0})
    easy_margin: bool = False  # ArcFace: margin only where cos(theta) > 0


@dataclass
class FaceDataConfig:
    format: Literal["synthetic", "folders"] = "synthetic"
    root: str | None = None  # synthetic: the cache root (default: the resvision cache)
    train: str | None = None  # identity folders: <train>/<person>/<image>
    pairs: str | None = None  # LFW pairs.txt of the verification set
    pairs_root: str | None = None  # images of pairs.txt: <pairs_root>/<name>/<name>_<n:04d>.<ext>
    pairs_ext: str = "jpg"
    bin: str | None = None  # insightface verification .bin (lfw.bin, cfp_fp.bin, ...) instead of pairs.txt
    gallery: str | None = None  # identity folders for rank-1 identification: first image per person = gallery
    # Photos, not aligned crops: detect (MTCNN) and align every folder above once into the cache
    # (<cache>/aligned/...), and align predict's inputs the same way.
    align: bool = False
    image_size: int = field(default=112, metadata={"ge": 8})
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # insightface's (x - 127.5) / 127.5
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5], metadata={"gt": 0})
    hflip: float = field(default=0.5, metadata={"ge": 0, "le": 1})
    color_jitter: float = field(default=0.2, metadata={"ge": 0, "le": 1})


@dataclass
class FaceDataInfo(DataInfo):
    """``classes`` are the training identities (rows of the margin head); ``threshold`` is the cosine
    similarity above which two faces are called the same person (the evaluation's verif_threshold)."""

    threshold: float | None = None
    image_size: int = 112

    meta_fields: ClassVar[tuple[str, ...]] = ("classes", "threshold", "image_size")


class FaceTask(Task):
    name = "face"
    description = "face recognition: ArcFace / CosFace, LFW pairs / insightface .bin verification (built-in synthetic faces)"
    ModelConfig = FaceModelConfig
    DataConfig = FaceDataConfig
    Data = FaceDataInfo
    default_config = "face/arcface_smallresnet_synthetic"
    main_metric = "verif_acc"
    predict_options = (TaskOption("threshold", float, "face: cosine similarity above which two faces are the same person "
                                  "(default: the checkpoint's verif_threshold)", minimum=-1, maximum=1),
                       TaskOption("gallery", str, "face: identity folders of known people (<dir>/<person>/<image>); "
                                  "each image is identified as the most similar person, or unknown"))

    # ------------------------------------------------------------------ building
    def transforms(self, train: bool):
        d = self.cfg.data
        return face_transforms(train, d.image_size, mean=d.mean, std=d.std, hflip=d.hflip, color_jitter=d.color_jitter)

    def _sources(self) -> dict[str, Any]:
        """Paths of the training folders, the verification set and the gallery, by format."""
        d = self.cfg.data
        if d.format == "synthetic":
            root = synthetic_faces_dataset(d.root)
            return {"train": root / "train", "pairs": d.pairs or root / "test" / "pairs.txt",
                    "pairs_root": d.pairs_root or root / "test", "bin": d.bin, "gallery": d.gallery or root / "test"}
        if d.train is None and d.pairs is None and d.bin is None:
            raise ConfigError("data.format=folders needs data.train (identity folders) and data.pairs or data.bin")
        pairs_root = d.pairs_root or (Path(d.pairs).parent if d.pairs else None)
        return {"train": d.train, "pairs": d.pairs, "pairs_root": pairs_root, "bin": d.bin, "gallery": d.gallery}

    def _aligned(self, src: dict[str, Any]) -> dict[str, Any]:
        """The same sources with every folder replaced by its aligned copy (``align_tree`` into the cache:
        written once, resumed when interrupted). Aligned crops are PNG, so pairs.txt looks for ``.png``."""
        import hashlib

        from ...datasets.demo import default_cache_dir
        from .align import FaceAligner, align_tree

        aligner = FaceAligner(size=self.cfg.data.image_size)
        out = dict(src)
        for key in ("train", "pairs_root", "gallery"):
            if src[key] is None:
                continue
            folder = Path(src[key]).resolve()
            tag = hashlib.sha1(f"{folder}:{aligner.size}".encode()).hexdigest()[:12]
            report = align_tree(folder, default_cache_dir() / "aligned" / f"{folder.name}-{tag}", aligner,
                                progress=self.cfg.train.progress)
            out[key] = report.path.parent
            missing = len(report.no_face) + len(report.unreadable)
            if missing:
                log.warning("data.%s: %d image(s) without a detectable face or unreadable, left out (listed in %s)",
                            key, missing, report.path)
        out["pairs_ext"] = "png"
        return out

    def build_datasets(self, training: bool = True) -> FaceDataInfo:
        d, src = self.cfg.data, self._sources()
        src.setdefault("pairs_ext", d.pairs_ext)
        if d.align:
            src = self._aligned(src)
        train, classes = None, []
        if src["train"] is not None:
            samples, classes = identity_folder_samples(src["train"])
            train = ClassificationDataset(samples, classes, self.transforms(True), seed=self.cfg.train.seed)
            if training:
                train.verify(progress=self.cfg.train.progress)
        elif training:
            raise ConfigError("training needs data.train: identity folders <train>/<person>/<image>")
        if src["bin"] is not None and d.pairs is not None:
            raise ConfigError("data.pairs and data.bin both set: give one verification set")
        val = FaceEvalSet.build(self.transforms(False), pairs=None if src["bin"] else src["pairs"],
                                pairs_root=src["pairs_root"], pairs_ext=src["pairs_ext"], bin_file=src["bin"],
                                gallery=src["gallery"])
        val.verify(progress=self.cfg.train.progress)
        return FaceDataInfo(train, val, classes, image_size=d.image_size)

    def build_model(self, data: FaceDataInfo) -> nn.Module:
        m = self.cfg.model
        num_classes = m.num_classes or len(data.classes) or None
        if num_classes is None:
            raise ConfigError("model.num_classes is unknown: set it or give training identities (data.train)")
        if data.classes and m.num_classes and m.num_classes != len(data.classes):
            raise ConfigError(f"model.num_classes={m.num_classes} but data.train has {len(data.classes)} identities")
        margin = build_margin(m.margin, s=m.scale, m=_DEFAULT_M[m.margin] if m.m is None else m.m,
                              easy_margin=m.easy_margin, m1=m.m1, m3=m.m3)
        return FaceModel(build_backbone_from_config(m.backbone), margin, num_classes, self.cfg.data.image_size,
                         embedding_size=m.embedding_size, dropout=m.dropout)

    def build_evaluator(self, data: FaceDataInfo) -> FaceEvaluator:
        return FaceEvaluator(data.val, data)

    # ------------------------------------------------------------------ steps
    def training_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        return {"ce": F.cross_entropy(model(images, labels).float(), labels)}

    def evaluation_step(self, model: nn.Module, batch):
        images, indices = batch
        return flip_embeddings(model, images), indices

    # ------------------------------------------------------------------ results
    def write_report(self, run_dir: Path, model: nn.Module, evaluator: FaceEvaluator, data: FaceDataInfo) -> None:
        evaluator.write_report(run_dir)

    @torch.inference_mode()
    def predict(self, model: nn.Module, paths: list[str], data: FaceDataInfo, threshold: float | None = None,
                gallery: str | None = None) -> list[dict[str, Any]]:
        """Embeds the face of each image (aligned first with ``data.align``). For exactly two images, also
        their cosine similarity and the same / different decision at ``threshold`` (default: the checkpoint's
        verif_threshold); with ``gallery``, the most similar known person of each face (the mean embedding of
        that person's gallery images), or ``unknown`` below the threshold."""
        threshold = data.threshold if threshold is None else threshold
        faces, results = self._faces(paths)
        emb = self._embed(model, [face for _, face in faces])
        for (i, _), e in zip(faces, emb):
            results[i]["embedding"] = e.round(6).tolist()
        if gallery is not None:
            people, centres = self._gallery(model, gallery)
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

    def _embed(self, model: nn.Module, faces: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        device = next(model.parameters()).device
        transform = self.transforms(False)
        out = [np.zeros((0, self.cfg.model.embedding_size), np.float32)]
        for start in range(0, len(faces), batch_size):
            images = torch.stack([transform(face) for face in faces[start:start + batch_size]]).to(device)
            out.append(flip_embeddings(model, images).cpu().numpy())
        return np.concatenate(out)

    def _gallery(self, model: nn.Module, folder: str) -> tuple[list[str], np.ndarray]:
        """Names of the gallery's people and their normalised mean embeddings."""
        samples, people = identity_folder_samples(folder)
        faces, _ = self._faces([path for path, _ in samples])
        emb = self._embed(model, [face for _, face in faces])
        labels = np.array([samples[i][1] for i, _ in faces], dtype=np.int64)
        centres = np.stack([emb[labels == k].mean(0) if (labels == k).any() else np.zeros(emb.shape[1], np.float32)
                            for k in range(len(people))])
        return people, centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)

    def _faces(self, paths: list[str]) -> tuple[list[tuple[int, np.ndarray]], list[dict[str, Any]]]:
        """``(result index, face pixels)`` for each image with a face, and one result dict per image; with
        ``data.align`` the largest face is detected and aligned, an image without a face is listed, not fatal."""
        results: list[dict[str, Any]] = [{"image": str(p)} for p in paths]
        aligner = None
        if self.cfg.data.align:
            from .align import FaceAligner

            aligner = FaceAligner(size=self.cfg.data.image_size)
        faces = []
        for i, path in enumerate(paths):
            image = read_image(path)
            face = aligner.align(image) if aligner is not None else image
            if face is None:
                results[i]["error"] = "no face found"
                log.warning("%s: no face found, skipped", path)
                continue
            faces.append((i, face))
        return faces, results
