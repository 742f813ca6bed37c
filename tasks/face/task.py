"""Face recognition task: ArcFace / CosFace training on identity folders, LFW-protocol verification.

Training is closed-set classification of the training identities through a margin head; evaluation never
uses those classes: it embeds held-out faces (image + mirror, summed, normalised) and scores pairs with
the 10-fold LFW protocol (``verification.py``), plus rank-1 identification when a gallery folder is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from ...backbone import build_backbone_from_config
from ...config import BackboneConfig, setting
from ...datasets import (ClassificationDataset, FaceEvalSet, face_transforms, identity_folder_samples, read_image,
                         synthetic_faces_dataset)
from ...errors import ConfigError, DataError
from ..base import Batch, DataInfo, Task
from .evaluator import FaceEvaluator
from .margin import build_margin
from .model import FaceModel, flip_embeddings
from .onnx import FaceExport
from .results import FacePrediction

log = logging.getLogger("resvision")

_DEFAULT_M = {"arcface": 0.5, "cosface": 0.35, "combined": 0.5}


@dataclass
class FaceBatch(Batch):
    """``targets``: identity labels (training) or the images' indices in the evaluation set (validation)."""

    targets: torch.Tensor


def collate_faces(samples: list[tuple[torch.Tensor, int]]) -> FaceBatch:
    return FaceBatch(*default_collate(samples))


@dataclass
class FaceModelConfig:
    backbone: BackboneConfig = setting(factory=BackboneConfig, help="the backbone; its last feature map feeds the "
                                                                    "embedding layer")
    num_classes: int | None = setting(None, "training identities (rows of the margin head); null: those in data.train",
                                      ge=1)
    embedding_size: int = setting(512, "dimension of the face embedding (512 in insightface)", ge=2)
    dropout: float = setting(0.0, "dropout probability before the embedding's linear layer", ge=0, lt=1)
    margin: Literal["arcface", "cosface", "combined"] = setting("arcface", "arcface: cos(theta + m); cosface: "
                                                                           "cos(theta) - m; combined: cos(m1 theta "
                                                                           "+ m) - m3")
    scale: float = setting(64.0, "s: the logit scale applied after the margin", gt=0)
    m: float | None = setting(None, "arcface: the angle (rad); cosface: the cosine offset; combined: m2; null: 0.5 / "
                                    "0.35 / 0.5", ge=0)
    m1: float = setting(1.0, "combined margin only: the angle factor m1 in cos(m1 theta + m) - m3", gt=0)
    m3: float = setting(0.0, "combined margin only: the cosine offset m3 in cos(m1 theta + m) - m3", ge=0)
    easy_margin: bool = setting(False, "arcface only: apply the margin only where cos(theta) > 0")


@dataclass
class FaceDataConfig:
    format: Literal["synthetic", "folders"] = setting("synthetic", "synthetic: the built-in faces; folders: your "
                                                                   "identity folders and verification set")
    root: str | None = setting(None, "synthetic: the cache root; null: the resvision cache")
    train: str | None = setting(None, "training identity folders: <train>/<person>/<image>; null: the built-in people")
    pairs: str | None = setting(None, "the verification set's pairs file in LFW format (pairs.txt); null: bin, or "
                                      "the built-in set")
    pairs_root: str | None = setting(None, "images of pairs.txt: <pairs_root>/<name>/<name>_<n:04d>.<ext>; null: "
                                           "pairs.txt's folder")
    pairs_ext: str = setting("jpg", "image extension of the pairs images")
    bin: str | None = setting(None, "insightface verification .bin (lfw.bin, cfp_fp.bin, ...) instead of pairs.txt")
    gallery: str | None = setting(None, "identity folders for rank-1 identification, first image per person as "
                                        "gallery; null: none (synthetic: built-in)")
    align: bool = setting(False, "photos, not aligned crops: detect (MTCNN) and align every folder (once, into the "
                                 "cache) and predict's inputs")
    image_size: int = setting(112, "side of the square aligned face crop fed to the network, in pixels", ge=8)
    mean: list[float] = setting(factory=lambda: [0.5, 0.5, 0.5], help="per-channel RGB normalisation mean in 0..1 "
                                                                      "units (insightface: (x - 127.5) / 127.5)")
    std: list[float] = setting(factory=lambda: [0.5, 0.5, 0.5], help="per-channel RGB normalisation standard "
                                                                     "deviation in 0..1 units", gt=0)
    hflip: float = setting(0.5, "training: probability of a horizontal flip", ge=0, le=1)
    color_jitter: float = setting(0.2, "training: brightness / contrast / saturation jitter j (factors in [1-j, "
                                       "1+j]); 0: off", ge=0, le=1)


@dataclass
class FaceDataInfo(DataInfo):
    """``classes`` are the training identities (rows of the margin head); ``threshold`` is the cosine
    similarity above which two faces are called the same person (the evaluation's verif_threshold)."""

    threshold: float | None = None

    meta_fields: ClassVar[tuple[str, ...]] = ("classes", "threshold")


class FaceTask(FaceExport, FacePrediction, Task):
    name = "face"
    description = "face recognition: ArcFace / CosFace, LFW pairs / insightface .bin verification (built-in synthetic faces)"
    ModelConfig = FaceModelConfig
    DataConfig = FaceDataConfig
    Data = FaceDataInfo
    default_config = "face/arcface_smallresnet_synthetic"
    main_metric = "verif_acc"

    # ------------------------------------------------------------------ building
    def transforms(self, train: bool):
        d = self.cfg.data
        return face_transforms(train, d.image_size, mean=d.mean, std=d.std, hflip=d.hflip, color_jitter=d.color_jitter)

    def _sources(self, training: bool = True) -> dict[str, Any]:
        """Paths of the training folders, the verification set (pairs.txt + image root + extension, or .bin)
        and the gallery, by format; checked before anything is read. The built-in people are written only when
        something reads them: training, or an evaluation without a pairs file or .bin of its own."""
        d = self.cfg.data
        if d.pairs is not None and d.bin is not None:
            raise ConfigError("data.pairs and data.bin are both set: give one verification set (data.pairs=null to "
                              "evaluate on the .bin)")
        src = {"train": d.train, "pairs": d.pairs, "bin": d.bin, "gallery": d.gallery, "pairs_ext": d.pairs_ext,
               "pairs_root": d.pairs_root or (Path(d.pairs).parent if d.pairs else None)}
        if d.format == "synthetic" and (training or (d.pairs is None and d.bin is None)):
            root = synthetic_faces_dataset(d.root)
            src["train"] = d.train or root / "train"
            if d.pairs is None and d.bin is None:  # the built-in verification set and its people as the gallery
                src.update(pairs=root / "test" / "pairs.txt", pairs_root=root / "test", gallery=d.gallery or root / "test")
        if src["pairs"] is None and src["bin"] is None:
            raise ConfigError(f"data.format={d.format} needs a verification set: data.pairs (LFW pairs.txt) or data.bin "
                              "(insightface .bin)")
        return src

    def _aligned(self, src: dict[str, Any], training: bool) -> dict[str, Any]:
        """The same sources with every folder replaced by its aligned copy (``align_tree`` into
        ``<cache>/aligned/``: written once, resumed when interrupted; rank 0 aligns, the others wait).
        Aligned crops are PNG, so pairs.txt looks for ``.png``."""
        import hashlib

        from ...datasets.demo import default_cache_dir
        from ...engine import distributed as dist_utils
        from .align import FaceAligner, align_tree

        aligner = FaceAligner(size=self.cfg.data.image_size)
        out = dict(src, pairs_ext="png")
        for key in ("train", "pairs_root", "gallery"):
            if src[key] is None or (key == "train" and not training):
                continue
            folder = Path(src[key]).resolve()
            # pairs get their own copy: it holds whole-image stand-ins that must never become training faces
            role = "pairs" if key == "pairs_root" else "faces"
            tag = hashlib.sha1(f"{folder}:{aligner.size}:{role}".encode()).hexdigest()[:12]
            dst = default_cache_dir() / "aligned" / f"{folder.name}-{tag}"
            if dist_utils.is_main_process():
                report = align_tree(folder, dst, aligner, progress=self.cfg.train.progress)
                if key == "pairs_root" and report.no_face:
                    _whole_image_fallback(folder, dst, report.no_face, aligner.size)
                    log.warning("data.pairs: no face found in %d pair image(s); the whole image, resized, stands in "
                                "for the aligned crop so every pair stays in its fold (listed in %s)",
                                len(report.no_face), report.path)
                elif report.no_face or report.unreadable:
                    log.warning("data.%s: %d image(s) without a detectable face or unreadable, left out (listed in "
                                "%s)", key, len(report.no_face) + len(report.unreadable), report.path)
            dist_utils.barrier()
            out[key] = dst
        return out

    def build_datasets(self, training: bool = True) -> FaceDataInfo:
        """Training identities (listed only when training: evaluation takes the identity count from the
        checkpoint) and the evaluation set, every image of which is decoded once up front."""
        d, src = self.cfg.data, self._sources(training)
        if d.align:
            src = self._aligned(src, training)
        train, classes, skipped = None, [], []
        if training:
            if src["train"] is None:
                raise ConfigError("training needs data.train: identity folders <train>/<person>/<image>")
            samples, classes = identity_folder_samples(src["train"])
            train = ClassificationDataset(samples, classes, self.transforms(True), seed=self.cfg.train.seed)
            skipped = train.verify(progress=self.cfg.train.progress)
        val = FaceEvalSet.build(self.transforms(False), pairs=src["pairs"], pairs_root=src["pairs_root"],
                                pairs_ext=src["pairs_ext"], bin_file=src["bin"], gallery=src["gallery"])
        _check_pairs(val, src["bin"] or src["pairs"])
        log.info("face data: %s%d evaluation images (%d pairs, %d gallery people)",
                 f"{len(train)} train images of {len(classes)} people / " if train is not None else "", len(val),
                 0 if val.pairs is None else len(val.pairs), 0 if val.gallery is None else len(val.gallery))
        val.verify(progress=self.cfg.train.progress)
        return FaceDataInfo(train, val, classes, skipped)

    def build_model(self, data: FaceDataInfo) -> nn.Module:
        m = self.cfg.model
        num_classes = self.num_classes(data, "identities", "data.train")
        margin = build_margin(m.margin, s=m.scale, m=_DEFAULT_M[m.margin] if m.m is None else m.m,
                              easy_margin=m.easy_margin, m1=m.m1, m3=m.m3)
        return FaceModel(build_backbone_from_config(m.backbone), margin, num_classes, self.cfg.data.image_size,
                         embedding_size=m.embedding_size, dropout=m.dropout)

    def build_evaluator(self, data: FaceDataInfo) -> FaceEvaluator:
        return FaceEvaluator(data.val, data)

    # ------------------------------------------------------------------ steps
    def collate_fn(self):
        return collate_faces

    def training_step(self, model: nn.Module, batch: FaceBatch) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(model(batch.images, batch.targets), batch.targets)}  # the margin head returns float32 logits

    def evaluation_step(self, model: nn.Module, batch: FaceBatch):
        return flip_embeddings(model, batch.images), batch.targets


def _whole_image_fallback(src: Path, dst: Path, relative: list[str], size: int) -> None:
    """Write each listed image of ``src``, resized to ``size`` x ``size``, where its aligned crop would be: the
    LFW protocol scores every pair, so a face MTCNN misses is compared as the whole picture (as evaluation
    scripts that centre-crop unaligned images do) rather than dropped with its pair."""
    import cv2
    from PIL import Image

    from .align import write_atomic

    for rel in relative:
        out = (dst / rel).with_suffix(".png")
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            resized = cv2.resize(read_image(src / rel), (size, size), interpolation=cv2.INTER_AREA)
            write_atomic(out, lambda f, pixels=resized: Image.fromarray(pixels).save(f, format="PNG"))


def _check_pairs(eval_set: FaceEvalSet, source: Any, folds: int = 10) -> None:
    """The 10-fold protocol needs at least 10 pairs, some of each kind: checked before any training."""
    same = int(eval_set.pairs[:, 2].sum())
    different = len(eval_set.pairs) - same
    if len(eval_set.pairs) < folds or not same or not different:
        raise DataError(f"{source}: {len(eval_set.pairs)} pairs ({same} same-person, {different} different-person); "
                        f"the {folds}-fold protocol needs at least {folds} pairs and some of each kind")
