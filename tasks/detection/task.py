"""Detection task: config schema, COCO / VOC / built-in shapes data, Faster R-CNN glue, reports."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ...backbone import build_backbone_from_config
from ...backbone.weights import fetch_url, load_strict, read_state_dict, torchvision_cache_path, torchvision_weights_url
from ...config import BackboneConfig, setting
from ...datasets import read_image
from ...datasets.coco import load_coco
from ...datasets.detection import DetectionData, DetectionDataset, detection_collate
from ...datasets.voc import load_voc
from ...datasets.detection_transforms import detection_transforms
from ...datasets.shapes import load_shapes
from ...errors import ConfigError
from ...reports import save_image_grid
from ..base import Batch, DataInfo, Task
from .evaluator import DetectionEvaluator
from .model import DetectorSettings, build_faster_rcnn, set_frozen_bn_eps
from .onnx import DetectionExport
from .results import DetectionPrediction, draw_boxes

log = logging.getLogger("resvision")


@dataclass
class DetectionBatch(Batch):
    """``images``: a list of (3, H, W) float images in [0, 1] (sizes differ; torchvision's model normalises and
    resizes); ``targets``: per image ``{"boxes" (K, 4) xyxy pixels, "labels" (K,) 1-based, "image_id", ...}``."""

    targets: list[dict[str, Any]]


def collate_detection(samples: list[tuple[torch.Tensor, dict[str, Any]]]) -> DetectionBatch:
    return DetectionBatch(*detection_collate(samples))


@dataclass
class DetectionModelConfig(DetectorSettings):
    backbone: BackboneConfig = setting(factory=BackboneConfig, help="the backbone; each of its output features feeds "
                                                                    "the FPN")
    num_classes: int | None = setting(None, "object classes, background excluded; null: from the data", ge=1)
    pretrained: str | None = setting(None, "whole-detector weights: torchvision:COCO_V1 (resnet50 only) or a file; "
                                           "null: just backbone.pretrained")


@dataclass
class DetectionDataConfig:
    format: Literal["shapes", "coco", "voc"] = setting("shapes", "shapes: the built-in set; coco: instances JSON + "
                                                                 "image folder; voc: a VOC-layout folder")
    shapes_format: Literal["coco", "voc"] = setting("coco", "shapes: which copy of the built-in set the adapters "
                                                            "read")
    root: str | None = setting(None, "voc: the folder with Annotations/, JPEGImages/, ImageSets/; shapes: cache dir "
                                     "(null: default)")
    train_annotations: str | None = setting(None, "coco: the training instances JSON")
    train_images: str | None = setting(None, "coco: the folder the training JSON's file_name entries are relative "
                                             "to")
    val_annotations: str | None = setting(None, "coco: the validation instances JSON")
    val_images: str | None = setting(None, "coco: the folder the validation JSON's file_name entries are relative "
                                           "to")
    train_split: str = setting("train", "voc: the training split, listed in ImageSets/Main/<split>.txt")
    val_split: str = setting("val", "voc: the validation split, listed in ImageSets/Main/<split>.txt")
    classes: list[str] | None = setting(None, "class names in label order (coco: category names); null: coco every "
                                              "category, voc the 20 VOC classes")
    keep_empty: bool = setting(True, "images without objects stay in training as negatives (validation keeps them "
                                     "always)")
    hflip: float = setting(0.5, "training: probability of a horizontal flip", ge=0, le=1)
    scale_jitter: list[float] = setting(factory=lambda: [0.8, 1.2], help="training: [low, high] zoom about the image "
                                                                         "centre (> 1 zooms in), size kept",
                                        gt=0, range=True)
    color_jitter: float = setting(0.2, "training: brightness / contrast / saturation jitter j (factors in [1-j, "
                                       "1+j]); 0: off", ge=0, le=1)
    min_visibility: float = setting(0.3, "training: boxes cut below this visible fraction of their area by "
                                         "augmentation are dropped", ge=0, le=1)


@dataclass
class DetectionDataInfo(DataInfo):
    """Detection data: labels ``1..K`` map to ``category_ids`` (the dataset's own ids, for COCO
    results); ``val_gt`` is the loaded validation split with its COCO ground truth."""

    category_ids: list[int] = field(default_factory=list)
    val_gt: DetectionData | None = None

    meta_fields = ("classes", "category_ids")


class DetectionTask(DetectionExport, DetectionPrediction, Task):
    name = "detection"
    description = "Faster R-CNN + FPN object detection (COCO / VOC / built-in shapes)"
    ModelConfig = DetectionModelConfig
    DataConfig = DetectionDataConfig
    Data = DetectionDataInfo
    default_config = "detection/fasterrcnn_smallresnet_shapes"
    main_metric = "bbox_AP"
    results_format = "COCO results JSON ([{image_id, category_id, bbox: [x, y, w, h], score}])"

    def backbone_of(self, model: nn.Module) -> nn.Module:
        return model.backbone.body

    # ------------------------------------------------------------------ data
    def load_data(self, split: Literal["train", "val"]) -> DetectionData:
        """Read one split with the configured adapter (the built-in set goes through the same adapters)."""
        d = self.cfg.data
        keep = d.keep_empty or split == "val"  # never drop evaluation images
        if d.format == "shapes":
            return load_shapes(split, fmt=d.shapes_format, cache_dir=d.root)
        if d.format == "coco":
            ann, images = (d.train_annotations, d.train_images) if split == "train" else (d.val_annotations, d.val_images)
            if not ann or not images:
                raise ConfigError(f"data.format=coco needs data.{split}_annotations and data.{split}_images")
            return load_coco(ann, images, classes=d.classes, keep_empty=keep)
        if not d.root:
            raise ConfigError("data.format=voc needs data.root (the folder holding Annotations/ and JPEGImages/)")
        return load_voc(d.root, d.train_split if split == "train" else d.val_split, classes=d.classes, keep_empty=keep)

    def build_datasets(self, training: bool = True) -> DetectionDataInfo:
        """Training: both splits. Evaluation: the val split alone, so a checkpoint evaluates where its training
        files are absent (the class count is checked against the checkpoint's)."""
        d = self.cfg.data
        val = self.load_data("val")
        train = self.load_data("train") if training else None
        if train is not None and train.classes != val.classes:
            raise ConfigError(f"train and val class lists differ: {train.classes} vs {val.classes}")
        log.info("detection data: %s%d val images, %d classes", f"{len(train.samples)} train / " if train else "",
                 len(val.samples), len(val.classes))
        augment = detection_transforms(True, hflip=d.hflip, scale_jitter=tuple(d.scale_jitter),
                                       color_jitter=d.color_jitter, min_visibility=d.min_visibility)
        seed = self.cfg.train.seed
        return DetectionDataInfo(train=DetectionDataset(train, augment, train=True, seed=seed) if train else None,
                                 val=DetectionDataset(val, detection_transforms(False), train=False, seed=seed),
                                 classes=list(val.classes), category_ids=list(val.category_ids), val_gt=val)

    def collate_fn(self):
        return collate_detection

    # ------------------------------------------------------------------ model
    def build_model(self, data: DataInfo) -> nn.Module:
        m = self.cfg.model
        num_classes = self.num_classes(data)
        body = build_backbone_from_config(m.backbone)
        settings = DetectorSettings(**{f.name: getattr(m, f.name) for f in dataclasses.fields(DetectorSettings)})
        model = build_faster_rcnn(body, num_classes + 1, settings)
        if m.pretrained:
            load_detector_weights(model, m.pretrained, m.backbone.name)
        return model

    def build_evaluator(self, data: DetectionDataInfo) -> DetectionEvaluator:
        return DetectionEvaluator(data.val_gt.coco_gt, data.category_ids, data.classes)

    def load_results(self, path: str | Path, data: DetectionDataInfo) -> DetectionEvaluator:
        """Score a COCO-format results file from any detector against the validation ground truth."""
        evaluator = self.build_evaluator(data)
        evaluator.load_results(path)
        return evaluator

    # ------------------------------------------------------------------ steps
    def training_step(self, model: nn.Module, batch: DetectionBatch) -> dict[str, torch.Tensor]:
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in batch.targets]
        return model(batch.images, targets)  # torchvision: loss_classifier, loss_box_reg, loss_objectness, loss_rpn_box_reg

    def evaluation_step(self, model: nn.Module, batch: DetectionBatch):
        images, targets = batch.images, batch.targets
        # one image at a time, as torchvision's reference evaluates (batch 1): batched, torchvision pads every image
        # to the batch's largest, so detections would depend on which images share a batch (0.013 bbox_AP on the
        # demo), and eval would differ from predict and from the exported one-image graph
        outputs = [model([image])[0] for image in images]
        return [{k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in o.items()} for o in outputs], targets

    # ------------------------------------------------------------------ reports
    def write_report(self, run_dir: Path, model: nn.Module, evaluator: DetectionEvaluator,
                     data: DetectionDataInfo, device: torch.device) -> None:
        evaluator.write_report(run_dir)
        samples = data.val_gt.samples[:8]
        by_image: dict[int, list[dict]] = {}
        for r in evaluator.results:
            by_image.setdefault(r["image_id"], []).append(r)
        images, captions = [], []
        for s in samples:
            dets = [r for r in by_image.get(s.image_id, []) if r["score"] >= 0.5]
            boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in dets)]).reshape(-1, 4)
            names = [data.classes[data.category_ids.index(r["category_id"])] + f" {r['score']:.2f}" for r in dets]
            images.append(draw_boxes(read_image(s.image_path), s.boxes, boxes, names))
            captions.append(f"image {s.image_id}: {len(dets)} detections >= 0.5")
        if images:
            save_image_grid(images, captions, Path(run_dir) / "plots" / "predictions.png",
                            "Validation predictions (green: ground truth, red: detections >= 0.5)", cols=4)


def load_detector_weights(model: nn.Module, spec: str, backbone_name: str) -> None:
    """Whole-detector weights: ``torchvision:<WEIGHTS>`` of ``fasterrcnn_resnet50_fpn`` or a file
    (a torchvision state dict or a resvision detection checkpoint). A box predictor of another
    class count is left freshly initialised (the usual fine-tuning recipe) and said so."""
    if spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        if backbone_name != "resnet50":
            raise ConfigError(f"model.pretrained={spec} is a resnet50-FPN detector; set model.backbone.name=resnet50")
        url = torchvision_weights_url("fasterrcnn_resnet50_fpn", name)
        path = fetch_url(url, torchvision_cache_path(url), f"torchvision detector weights fasterrcnn_resnet50_fpn {name}")
        state = read_state_dict(path)
        set_frozen_bn_eps(model, 0.0)  # as torchvision does for these weights
    else:
        path, state = spec, read_state_dict(spec)
        if isinstance(state.get("model"), dict):  # a resvision checkpoint
            state = state["model"]
    own = model.state_dict()
    head = [k for k in state if k.startswith("roi_heads.box_predictor.") and k in own and state[k].shape != own[k].shape]
    if head:
        log.info("model.pretrained: %s has another class count; the box predictor starts fresh", path)
        state = {k: v for k, v in state.items() if k not in head} | {k: own[k] for k in head}
    load_strict(model, state, f"model.pretrained {path}")
    log.info("loaded detector weights from %s", path)
