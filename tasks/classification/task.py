"""Classification task: config schema, data, loss (CE / label smoothing / mixup-cutmix), reports."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, default_collate

from ...backbone import build_backbone_from_config
from ...config import BackboneConfig, setting
from ...datasets import IMAGENET_MEAN, IMAGENET_STD, build_classification_datasets, classification_transforms, read_image
from ...errors import ConfigError, DataError
from ...modes import eval_mode
from ...reports import save_image_grid
from ..base import Batch, DataInfo, Task
from ..heads import build_head
from .evaluator import ClassificationEvaluator
from .gradcam import grad_cam
from .model import ImageClassifier
from .onnx import ClassificationExport
from .results import ClassificationPrediction


@dataclass
class ClassificationBatch(Batch):
    labels: torch.Tensor  # (N,) class indices
    indices: torch.Tensor  # (N,) positions in the dataset (reports name the files)


def collate_classification(samples: list[tuple[torch.Tensor, int, int]]) -> ClassificationBatch:
    return ClassificationBatch(*default_collate(samples))


@dataclass
class ClassificationModelConfig:
    backbone: BackboneConfig = setting(factory=BackboneConfig, help="the backbone; its last feature map is pooled "
                                                                    "into the linear classifier")
    num_classes: int | None = setting(None, "output classes; null: the number of classes in the data", ge=1)
    dropout: float = setting(0.0, "dropout probability before the final linear layer", ge=0, lt=1)
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy targets (mixup / cutmix too); 0: off",
                                     ge=0, le=1)
    head: str = setting("linear", "linear: pooling, dropout and one fully connected layer; or the name of a head "
                                  "registered with rv.register_head")
    head_options: dict[str, Any] = setting(factory=dict, help="keyword arguments of a registered head (model.head)")


@dataclass
class ClassificationDataConfig:
    # The held-out fraction was `val_split`, which detection uses for a split *name*.
    renamed_keys: ClassVar[dict[str, str]] = {"val_split": "val_fraction"}

    format: Literal["digits", "folder", "csv"] = setting("digits", "digits: built-in scikit-learn digits; folder: "
                                                                   "ImageFolder class trees; csv: path,label files")
    root: str | None = setting(None, "folder: dir with train/ + val/ or one class tree to split; csv: base of "
                                     "relative paths; digits: cache dir")
    train: str | None = setting(None, "training class folder or CSV (path,label); folder: null reads root")
    val: str | None = setting(None, "validation class folder or CSV; null: root/val if any, else val_fraction of train")
    val_fraction: float = setting(0.2, "fraction of the training data held out for validation when there is no val "
                                       "data", ge=0, lt=1)
    classes: list[str] | None = setting(None, "class names in index order; null: the training data's sorted names")
    image_size: int = setting(224, "side of the square network input in pixels (train crop, eval centre crop)", ge=1)
    resize: int | None = setting(None, "evaluation: shorter side before the centre crop, >= image_size; null: "
                                       "image_size / 0.875", ge=1)
    mean: list[float] = setting(factory=lambda: list(IMAGENET_MEAN), help="per-channel RGB normalisation mean, in "
                                                                          "0..1 units (default: ImageNet's)")
    std: list[float] = setting(factory=lambda: list(IMAGENET_STD), help="per-channel RGB normalisation standard "
                                                                        "deviation, in 0..1 units", gt=0)
    hflip: float = setting(0.5, "training: probability of a horizontal flip (0 for digits / text)", ge=0, le=1)
    scale: list[float] = setting(factory=lambda: [0.08, 1.0], help="training: [min, max] random-resized-crop area as "
                                                                   "a fraction of the image", gt=0, le=1, range=True)
    color_jitter: float = setting(0.4, "training: brightness / contrast / saturation jitter j (factors in [1-j, "
                                       "1+j]); 0: off", ge=0, le=1)
    mixup: float = setting(0.0, "mixup Beta(alpha, alpha) parameter alpha (timm Mixup); 0: off", ge=0)
    cutmix: float = setting(0.0, "cutmix Beta(alpha, alpha) parameter alpha; 0: off (with mixup on too, each batch "
                                 "picks one at random)", ge=0)
    on_bad_image: Literal["skip", "error"] = setting("skip", "an unreadable image (every one is decoded once before "
                                                             "training): skip it and list it, or stop")

    def validate(self) -> None:
        """Cross-field checks (the loader prefixes ``data.``)."""
        if self.resize is not None and self.resize < self.image_size:
            raise ConfigError(f"resize={self.resize} is smaller than data.image_size={self.image_size}: evaluation "
                              f"resizes, then centre-crops image_size; set data.resize >= {self.image_size} (or null: "
                              "image_size / 0.875)")


class IndexedDataset(Dataset):
    """Adds the sample index to each item, so reports can find the image behind a prediction."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, label, index

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)


class ClassificationTask(ClassificationExport, ClassificationPrediction, Task):
    name = "classification"
    description = "image classification (folder / CSV / built-in digits)"
    ModelConfig = ClassificationModelConfig
    DataConfig = ClassificationDataConfig
    default_config = "classification/classifier_resnet20_digits"
    main_metric = "top1"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.mixup = None  # timm Mixup, made by build_model once the class count is known

    # ------------------------------------------------------------------ building
    def transforms(self, train: bool):
        d = self.cfg.data
        if len(d.scale) != 2:
            raise ConfigError(f"data.scale must be [min, max], got {d.scale}")
        return classification_transforms(
            train, d.image_size, resize=d.resize, mean=d.mean, std=d.std, hflip=d.hflip,
            scale=tuple(d.scale), color_jitter=d.color_jitter,
        )

    def build_datasets(self, training: bool = True) -> DataInfo:
        """Both splits; the images to be used decoded once up front (training: both splits;
        evaluation: the validation split): unreadable files are left out and listed
        (``data.on_bad_image=skip``) or stop the run (``error``) before epoch 1, so a validation
        image is never replaced by a neighbour."""
        d = self.cfg.data
        train, val = build_classification_datasets(
            d.format, root=d.root, train=d.train, val=d.val, val_fraction=d.val_fraction, classes=d.classes,
            train_transform=self.transforms(True), val_transform=self.transforms(False),
            on_bad_image=d.on_bad_image, seed=self.cfg.train.seed,
        )
        progress = self.cfg.train.progress
        skipped = (train.verify(progress=progress) if training else []) + val.verify(progress=progress)
        if skipped and d.on_bad_image == "error":
            raise DataError(f"unreadable image: {skipped[0]} ({len(skipped)} in all; "
                            "data.on_bad_image=skip leaves such files out)")
        return DataInfo(IndexedDataset(train), IndexedDataset(val), list(train.classes), skipped)

    def build_model(self, data: DataInfo) -> nn.Module:
        m = self.cfg.model
        num_classes = self.num_classes(data)
        backbone = build_backbone_from_config(m.backbone)
        if self.cfg.data.mixup > 0 or self.cfg.data.cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=self.cfg.data.mixup, cutmix_alpha=self.cfg.data.cutmix,
                               label_smoothing=m.label_smoothing, num_classes=num_classes)
        if m.head != "linear":
            return build_head(self.name, m.head, backbone, num_classes, dict(m.head_options))
        return ImageClassifier(backbone, num_classes, m.dropout)

    def build_evaluator(self, data: DataInfo) -> ClassificationEvaluator:
        return ClassificationEvaluator(data.classes or [str(i) for i in range(self.cfg.model.num_classes or 0)])

    # ------------------------------------------------------------------ steps
    def collate_fn(self):
        return collate_classification

    def training_step(self, model: nn.Module, batch: ClassificationBatch) -> dict[str, torch.Tensor]:
        images, labels = batch.images, batch.labels
        if self.mixup is not None and len(images) % 2 == 0:  # timm's Mixup pairs samples: needs an even batch
            images, soft = self.mixup(images, labels)
            logits = model(images)
            return {"ce": torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()}
        logits = model(images)
        return {"ce": F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.model.label_smoothing)}

    def evaluation_step(self, model: nn.Module, batch: ClassificationBatch):
        return model(batch.images), (batch.labels, batch.indices)

    # ------------------------------------------------------------------ reports
    def write_report(self, run_dir: Path, model: nn.Module, evaluator: ClassificationEvaluator, data: DataInfo,
                     device: torch.device) -> None:
        evaluator.write_report(run_dir)
        if not evaluator.labels:
            return
        self._prediction_table(run_dir, evaluator, data.val.dataset)
        self._misclassified_grid(run_dir, evaluator, data.val.dataset)
        if hasattr(model, "backbone"):  # Grad-CAM needs the torch model's gradients (not an exported file's)
            self._grad_cam_grid(run_dir, model, evaluator, data.val.dataset, device)

    def _prediction_table(self, run_dir: Path, evaluator: ClassificationEvaluator, source: Dataset) -> None:
        """val_predictions.csv: every validation image with its true and predicted class and the
        predicted probability (full precision, so two evaluations can be compared exactly)."""
        classes, probs, labels, indices = evaluator.arrays()
        names = evaluator.class_names
        with open(run_dir / "val_predictions.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "true", "predicted", "prob"])
            for c, p, t, i in zip(classes[:, 0], probs[:, 0], labels, indices):
                writer.writerow([source.samples[i][0], names[t], names[c], repr(float(p))])

    def _misclassified_grid(self, run_dir: Path, evaluator: ClassificationEvaluator, source: Dataset, limit: int = 24) -> None:
        classes, probs, labels, indices = evaluator.arrays()
        wrong = np.flatnonzero(classes[:, 0] != labels)
        wrong = wrong[np.argsort(-probs[wrong, 0], kind="stable")][:limit]  # most confident mistakes first
        if len(wrong) == 0:
            return
        names = evaluator.class_names
        images = [read_image(source.samples[indices[i]][0]) for i in wrong]
        captions = [f"true {names[labels[i]]} / pred {names[classes[i, 0]]} ({probs[i, 0]:.2f})" for i in wrong]
        save_image_grid(images, captions, run_dir / "plots" / "misclassified.png",
                        f"Most confident mistakes ({len(wrong)} of {int((classes[:, 0] != labels).sum())})")

    def _grad_cam_grid(self, run_dir: Path, model: nn.Module, evaluator: ClassificationEvaluator, source: Dataset,
                       device: torch.device, count: int = 8) -> None:
        d = self.cfg.data
        picks = np.linspace(0, len(source) - 1, num=min(count, len(source))).astype(int)
        batch = torch.stack([source[int(i)][0] for i in picks]).to(device)
        with eval_mode(model):
            cams, predicted = grad_cam(model, batch)
        mean, std = torch.tensor(d.mean)[:, None, None], torch.tensor(d.std)[:, None, None]
        shown, captions = [], []
        for image, cam, pred, idx in zip(batch.cpu(), cams.cpu(), predicted.cpu(), picks):
            rgb = (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
            heat = _jet(cam.numpy())
            shown.append((255 * (0.55 * rgb + 0.45 * heat)).astype(np.uint8))
            true = evaluator.class_names[source.samples[idx][1]]
            captions.append(f"true {true} / pred {evaluator.class_names[int(pred)]}")
        save_image_grid(shown, captions, run_dir / "plots" / "gradcam.png", "Grad-CAM of the predicted class", cols=4)


def _jet(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) RGB floats with matplotlib's jet colormap."""
    import matplotlib

    return matplotlib.colormaps["jet"](values)[..., :3]
