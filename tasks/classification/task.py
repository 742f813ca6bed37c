"""Classification task: config schema, data, loss (CE / label smoothing / mixup-cutmix), reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ...config import BackboneConfig
from ...datasets import IMAGENET_MEAN, IMAGENET_STD, build_classification_datasets, classification_transforms, read_image
from ...errors import ConfigError
from ...reports import save_image_grid
from ..base import Task
from .evaluator import ClassificationEvaluator
from .gradcam import grad_cam
from .model import ImageClassifier


@dataclass
class ClassificationModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    num_classes: int | None = None  # None: the number of classes in the data
    dropout: float = 0.0
    label_smoothing: float = 0.0


@dataclass
class ClassificationDataConfig:
    format: Literal["digits", "folder", "csv"] = "digits"
    root: str | None = None  # folder with train/ and val/, a class tree to split, or the digits cache
    train: str | None = None  # training folder or CSV
    val: str | None = None  # validation folder or CSV (absent: val_split of train)
    val_split: float = 0.2
    classes: list[str] | None = None
    image_size: int = 224
    resize: int | None = None  # evaluation resize before the centre crop (default size / 0.875)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    hflip: float = 0.5
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    color_jitter: float = 0.4
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0
    on_bad_image: Literal["skip", "error"] = "skip"


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


class ClassificationTask(Task):
    name = "classification"
    ModelConfig = ClassificationModelConfig
    DataConfig = ClassificationDataConfig
    default_config = "classification/classifier_resnet20_digits"
    main_metric = "top1"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.classes: list[str] | None = cfg.data.classes
        self.mixup = None

    # ------------------------------------------------------------------ building
    def transforms(self, train: bool):
        d = self.cfg.data
        if len(d.scale) != 2:
            raise ConfigError(f"data.scale must be [min, max], got {d.scale}")
        return classification_transforms(
            train, d.image_size, resize=d.resize, mean=d.mean, std=d.std, hflip=d.hflip,
            scale=tuple(d.scale), color_jitter=d.color_jitter,
        )

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        d = self.cfg.data
        train, val = build_classification_datasets(
            d.format, root=d.root, train=d.train, val=d.val, val_split=d.val_split, classes=d.classes,
            train_transform=self.transforms(True), val_transform=self.transforms(False),
            on_bad_image=d.on_bad_image, seed=self.cfg.train.seed,
        )
        self.classes = list(train.classes)
        self.val_source = val
        return IndexedDataset(train), IndexedDataset(val)

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        num_classes = m.num_classes or (len(self.classes) if self.classes else None)
        if num_classes is None:
            raise ConfigError("model.num_classes is unknown: set it or data.classes")
        if self.classes and m.num_classes and m.num_classes != len(self.classes):
            raise ConfigError(f"model.num_classes={m.num_classes} but the data has {len(self.classes)} classes")
        backbone = m.backbone.build()
        if self.cfg.data.mixup > 0 or self.cfg.data.cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=self.cfg.data.mixup, cutmix_alpha=self.cfg.data.cutmix,
                               label_smoothing=m.label_smoothing, num_classes=num_classes)
        return ImageClassifier(backbone, num_classes, m.dropout)

    def build_evaluator(self) -> ClassificationEvaluator:
        return ClassificationEvaluator(self.classes or [str(i) for i in range(self.cfg.model.num_classes or 0)])

    def checkpoint_meta(self) -> dict[str, Any]:
        return {"classes": list(self.classes or [])}

    def load_meta(self, meta: dict[str, Any]) -> None:
        self.classes = meta.get("classes") or self.classes

    # ------------------------------------------------------------------ steps
    def training_step(self, model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
        images, labels, _ = batch
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mixup is not None and len(images) % 2 == 0:  # timm's Mixup pairs samples: needs an even batch
            images, soft = self.mixup(images, labels)
            logits = model(images)
            return {"ce": torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()}
        logits = model(images)
        return {"ce": F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.model.label_smoothing)}

    def evaluation_step(self, model: nn.Module, batch, device: torch.device):
        images, labels, indices = batch
        images = images.to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return model(images), (labels, indices)

    # ------------------------------------------------------------------ reports
    def write_report(self, run_dir: Path, model: nn.Module, evaluator: ClassificationEvaluator) -> None:
        evaluator.write_report(run_dir)
        if not evaluator.labels or not hasattr(self, "val_source"):
            return
        self._misclassified_grid(run_dir, evaluator)
        self._grad_cam_grid(run_dir, model, evaluator)

    def _misclassified_grid(self, run_dir: Path, evaluator: ClassificationEvaluator, limit: int = 24) -> None:
        classes, probs, labels, indices = evaluator.arrays()
        wrong = np.flatnonzero(classes[:, 0] != labels)
        wrong = wrong[np.argsort(-probs[wrong, 0], kind="stable")][:limit]  # most confident mistakes first
        if len(wrong) == 0:
            return
        names = evaluator.class_names
        images = [read_image(self.val_source.samples[indices[i]][0]) for i in wrong]
        captions = [f"true {names[labels[i]]} / pred {names[classes[i, 0]]} ({probs[i, 0]:.2f})" for i in wrong]
        save_image_grid(images, captions, run_dir / "plots" / "misclassified.png",
                        f"Most confident mistakes ({len(wrong)} of {int((classes[:, 0] != labels).sum())})")

    def _grad_cam_grid(self, run_dir: Path, model: nn.Module, evaluator: ClassificationEvaluator, count: int = 8) -> None:
        device = next(model.parameters()).device
        d = self.cfg.data
        picks = np.linspace(0, len(self.val_source) - 1, num=min(count, len(self.val_source))).astype(int)
        batch = torch.stack([self.val_source[int(i)][0] for i in picks]).to(device)
        was_training = model.training
        model.eval()
        cams, predicted = grad_cam(model, batch)
        model.train(was_training)
        mean, std = torch.tensor(d.mean)[:, None, None], torch.tensor(d.std)[:, None, None]
        shown, captions = [], []
        for image, cam, pred, idx in zip(batch.cpu(), cams.cpu(), predicted.cpu(), picks):
            rgb = (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
            heat = _jet(cam.numpy())
            shown.append((255 * (0.55 * rgb + 0.45 * heat)).astype(np.uint8))
            true = evaluator.class_names[self.val_source.samples[idx][1]]
            captions.append(f"true {true} / pred {evaluator.class_names[int(pred)]}")
        save_image_grid(shown, captions, run_dir / "plots" / "gradcam.png", "Grad-CAM of the predicted class", cols=4)

    # ------------------------------------------------------------------ prediction
    @torch.inference_mode()
    def predict(self, model: nn.Module, paths: list[str], out_dir: Path | None = None, topk: int = 5,
                batch_size: int = 32) -> list[dict[str, Any]]:
        """Top-k classes for each image file: ``[{"image", "topk": [{"label", "index", "prob"}]}]``
        (``out_dir`` is unused: the caller writes the JSON / CSV)."""
        device = next(model.parameters()).device
        transform = self.transforms(False)
        names = self.classes or []
        results = []
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images = torch.stack([transform(read_image(p)) for p in chunk]).to(device)
            probs = model(images).float().softmax(dim=1)
            top_p, top_c = probs.topk(min(topk, probs.shape[1]), dim=1)
            for path, ps, cs in zip(chunk, top_p.tolist(), top_c.tolist()):
                results.append({"image": str(path), "topk": [
                    {"label": names[c] if c < len(names) else str(c), "index": c, "prob": round(p, 6)} for p, c in zip(ps, cs)
                ]})
        return results


def _jet(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) RGB floats with matplotlib's jet colormap."""
    import matplotlib

    return matplotlib.colormaps["jet"](values)[..., :3]
