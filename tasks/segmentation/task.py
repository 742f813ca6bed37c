"""Segmentation task: config schema, VOC / mask-folder / COCO / built-in shapes data, smp decoders, reports."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from ...backbone import build_backbone_from_config
from ...config import BackboneConfig, setting
from ...datasets.coco import load_coco_segmentation
from ...datasets.masks import voc_colormap
from ...datasets.segmentation import SegmentationData, SegmentationDataset, load_mask_folders, verify_segmentation
from ...datasets.segmentation_transforms import segmentation_transforms
from ...datasets.shapes import load_shapes_segmentation
from ...datasets.voc import load_voc_segmentation
from ...errors import ConfigError
from ...modes import eval_mode
from ...reports import save_image_grid
from ..base import Batch, DataInfo, Task
from .evaluator import SegmentationEvaluator
from .model import DEEPLAB_OUTPUT_STRIDE, SegmentationLoss, SegmentationModel, infer_logits
from .onnx import SegmentationExport
from .results import SegmentationPrediction, overlay

log = logging.getLogger("resvision")


@dataclass
class SegmentationBatch(Batch):
    """Images padded to the batch's largest (bottom / right, with 0) and their masks (padding: ``ignore_index``)."""

    masks: torch.Tensor  # (N, H, W) class indices
    indices: torch.Tensor | None  # (N,) positions in the dataset
    sizes: torch.Tensor | None  # (N, 2): each image's own (height, width) before padding


@dataclass
class InferenceConfig:
    """How evaluation and prediction run the model on a whole image (MMSegmentation's ``test_cfg``)."""

    mode: Literal["whole", "slide"] = setting("whole", "whole: one forward pass per image; slide: window x window "
                                                       "tiles, logits averaged")
    window: int = setting(512, "slide: side of the square tile in pixels", ge=32)
    stride: int = setting(341, "slide: pixels between tile starts (at most window)", ge=1)
    flip: bool = setting(False, "also average with the horizontally flipped image's logits")


@dataclass
class SegmentationModelConfig:
    backbone: BackboneConfig = setting(factory=BackboneConfig, help="the encoder; the DeepLabs dilate it to "
                                                                    "backbone.output_stride")
    decoder: Literal["unet", "fpn", "deeplabv3", "deeplabv3plus"] = setting(
        "unet", "segmentation-models-pytorch decoder; with output_stride null, deeplabv3 dilates to 8, deeplabv3plus "
                "to 16")
    decoder_channels: list[int] | None = setting(
        None, "unet: a width per block, deepest first; fpn: [pyramid, segmentation]; deeplab*: [aspp]; null: smp's",
        ge=1)
    dropout: float = setting(0.2, "dropout probability; fpn: before the head; deeplab*: in ASPP; unet: unused",
                             ge=0, lt=1)
    # As torchvision's aux classifier (weight 0.5 there) / MMSegmentation's auxiliary_head: deep supervision in
    # training only; evaluation, prediction and export never run the head.
    aux_weight: float = setting(0.0, "> 0: an auxiliary FCN head on the second-deepest feature, its loss x this; 0: "
                                     "none", ge=0)
    num_classes: int | None = setting(None, "classes including background; null: from the data", ge=2)
    loss: dict[str, float] = setting(factory=lambda: {"ce": 1.0},
                                     help="weighted sum of terms: ce, dice, focal, e.g. {ce: 1, dice: 0.5} (all skip "
                                          "ignore_index)")
    inference: InferenceConfig = setting(factory=InferenceConfig, help="how evaluation and prediction run the model "
                                                                       "on a whole image")


@dataclass
class SegmentationDataConfig:
    format: Literal["shapes", "voc", "folders", "coco"] = setting("shapes", "shapes: the built-in set; voc: a VOC "
                                                                            "folder; folders: image + mask folders; "
                                                                            "coco: instances JSON")
    shapes_format: Literal["voc", "coco"] = setting("voc", "shapes: which copy of the built-in set the adapters read")
    root: str | None = setting(None, "voc: the folder with JPEGImages/, SegmentationClass/, ImageSets/; shapes: "
                                     "cache dir (null: default)")
    train_split: str = setting("train", "voc: the training split, listed in ImageSets/Segmentation/<split>.txt")
    val_split: str = setting("val", "voc: the validation split, listed in ImageSets/Segmentation/<split>.txt")
    train_images: str | None = setting(None, "folders / coco: the training images folder")
    train_masks: str | None = setting(None, "folders: the training masks folder (<stem>.png per image)")
    train_annotations: str | None = setting(None, "coco: the training instances JSON")
    val_images: str | None = setting(None, "folders / coco: the validation images folder")
    val_masks: str | None = setting(None, "folders: the validation masks folder (<stem>.png per image)")
    val_annotations: str | None = setting(None, "coco: the validation instances JSON")
    classes: list[str] | None = setting(None, "class names by mask value, 0 first; folders: required; coco: categories "
                                              "to keep; null: voc's 21 / coco's all")
    colors: list[list[int]] | None = setting(None, "folders with RGB masks: colors[i] = [r, g, b] of class i; null: "
                                                   "masks hold class indices")
    ignore_colors: list[list[int]] = setting(factory=list, help="folders with RGB masks: [r, g, b] colours read as "
                                                                "ignore_index")
    ignore_index: int = setting(255, "mask value that is neither trained on nor scored (also padding, coco crowds)",
                                ge=0)
    crop_size: int = setting(512, "training: side of the square random crop in pixels", ge=8)
    scale: list[float] = setting(factory=lambda: [0.5, 2.0], help="training: [low, high] range of the random "
                                                                  "rescale factor", gt=0, range=True)
    hflip: float = setting(0.5, "training: probability of a horizontal flip", ge=0, le=1)
    color_jitter: float = setting(0.2, "training: brightness / contrast / saturation jitter j (factors in [1-j, "
                                       "1+j]); 0: off", ge=0, le=1)


@dataclass
class SegmentationDataInfo(DataInfo):
    """Segmentation data: ``classes[i]`` names mask value ``i``; ``colors`` is the RGB mask colour table (also
    the palette of predicted masks) when the data used one."""

    ignore_index: int = 255
    colors: list[list[int]] | None = None

    meta_fields = ("classes", "ignore_index", "colors")

    def palette(self) -> np.ndarray:
        """``(256, 3)`` uint8 colours of mask values: the data's colour table, else VOC's colour map."""
        palette = voc_colormap()
        if self.colors:
            palette[:len(self.colors)] = np.asarray(self.colors, dtype=np.uint8)
        return palette


class SegmentationTask(SegmentationExport, SegmentationPrediction, Task):
    name = "segmentation"
    description = "FPN / U-Net semantic segmentation (VOC / mask folders / COCO / built-in shapes)"
    ModelConfig = SegmentationModelConfig
    DataConfig = SegmentationDataConfig
    Data = SegmentationDataInfo
    default_config = "segmentation/fpn_smallresnet_shapes"
    main_metric = "mIoU"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.loss = SegmentationLoss(cfg.model.loss, cfg.data.ignore_index)  # config errors before any data
        inference = cfg.model.inference
        if inference.mode == "slide" and inference.stride > inference.window:
            raise ConfigError(f"model.inference.stride={inference.stride} exceeds model.inference.window="
                              f"{inference.window}: tiles would leave gaps")
        m = cfg.model
        if m.decoder in DEEPLAB_OUTPUT_STRIDE or m.backbone.output_stride is not None:
            stride = _deepest_stride(self.backbone_config())  # a dilation the backbone cannot honour: before data
            if m.decoder in DEEPLAB_OUTPUT_STRIDE and stride not in (8, 16):
                raise ConfigError(f"model.decoder={m.decoder} needs a backbone of output stride 8 or 16; "
                                  f"{m.backbone.name}'s deepest declared feature has stride {stride}")

    def backbone_config(self) -> BackboneConfig:
        """``model.backbone``, dilated to smp's output stride for the DeepLabs (16 for V3+, 8 for V3) when
        ``output_stride`` is unset and the backbone's own deepest stride is larger."""
        m = self.cfg.model
        default = DEEPLAB_OUTPUT_STRIDE.get(m.decoder)
        if default and m.backbone.output_stride is None and _deepest_stride(m.backbone) > default:
            return dataclasses.replace(m.backbone, output_stride=default)
        return m.backbone

    # ------------------------------------------------------------------ data
    def load_data(self, split: Literal["train", "val"]) -> SegmentationData:
        """Read one split with the configured adapter (the built-in set goes through the same adapters)."""
        d = self.cfg.data
        if d.format == "shapes":
            return load_shapes_segmentation(split, fmt=d.shapes_format, cache_dir=d.root)
        images = d.train_images if split == "train" else d.val_images
        if d.format == "voc":
            if not d.root:
                raise ConfigError("data.format=voc needs data.root (the folder holding JPEGImages/ and "
                                  "SegmentationClass/)")
            return load_voc_segmentation(d.root, d.train_split if split == "train" else d.val_split,
                                         classes=d.classes, ignore_index=d.ignore_index)
        if d.format == "coco":
            annotations = d.train_annotations if split == "train" else d.val_annotations
            if not annotations or not images:
                raise ConfigError(f"data.format=coco needs data.{split}_annotations and data.{split}_images")
            return load_coco_segmentation(annotations, images, classes=d.classes, ignore_index=d.ignore_index)
        masks = d.train_masks if split == "train" else d.val_masks
        if not images or not masks:
            raise ConfigError(f"data.format=folders needs data.{split}_images and data.{split}_masks")
        if not d.classes:
            raise ConfigError("data.format=folders needs data.classes (class names by mask value, 0 first)")
        return load_mask_folders(images, masks, d.classes, colors=d.colors, ignore_index=d.ignore_index,
                                 ignore_colors=d.ignore_colors)

    def transforms(self, train: bool):
        d = self.cfg.data
        return segmentation_transforms(train, crop_size=d.crop_size, scale=tuple(d.scale), hflip=d.hflip,
                                       color_jitter=d.color_jitter, ignore_index=d.ignore_index)

    def build_datasets(self, training: bool = True) -> SegmentationDataInfo:
        """Training: both splits, every mask decoded and checked up front. Evaluation: the val split alone, so
        a checkpoint evaluates where its training files are absent (its class count is checked against it)."""
        val = self.load_data("val")
        train = self.load_data("train") if training else None
        if train is not None and train.classes != val.classes:
            raise ConfigError(f"train and val class lists differ: {train.classes} vs {val.classes}")
        log.info("segmentation data: %s%d val images, %d classes",
                 f"{len(train.samples)} train / " if train else "", len(val.samples), val.num_classes)
        progress = self.cfg.train.progress
        for split in ([train, val] if train else [val]):
            verify_segmentation(split, progress=progress)
        seed = self.cfg.train.seed
        return SegmentationDataInfo(
            train=SegmentationDataset(train, self.transforms(True), train=True, seed=seed) if train else None,
            val=SegmentationDataset(val, self.transforms(False), train=False, seed=seed),
            classes=list(val.classes), ignore_index=val.ignore_index, colors=val.colors,
        )

    def collate_fn(self):
        return self.collate

    def collate(self, batch: list[tuple[torch.Tensor, torch.Tensor, int]]) -> SegmentationBatch:
        """Stack ``(image, mask, index)`` samples, padding to the largest size in the batch (bottom / right):
        images with 0, masks with ``ignore_index``, so padding is never trained on or scored. Returns
        a :class:`SegmentationBatch`; ``sizes[k]`` is image k's own ``(height, width)``, which evaluation
        crops back to so that no image's prediction depends on its batch-mates."""
        images, masks, indices = zip(*batch)
        h = max(i.shape[1] for i in images)
        w = max(i.shape[2] for i in images)
        image_batch = images[0].new_zeros(len(images), images[0].shape[0], h, w)
        mask_batch = torch.full((len(masks), h, w), self.cfg.data.ignore_index, dtype=torch.long)
        for k, (image, mask) in enumerate(zip(images, masks)):
            image_batch[k, :, :image.shape[1], :image.shape[2]] = image
            mask_batch[k, :mask.shape[0], :mask.shape[1]] = mask
        sizes = torch.tensor([tuple(i.shape[1:]) for i in images])
        return SegmentationBatch(image_batch, mask_batch, torch.tensor(indices), sizes)

    # ------------------------------------------------------------------ model
    def build_model(self, data: DataInfo) -> nn.Module:
        m = self.cfg.model
        return SegmentationModel(build_backbone_from_config(self.backbone_config()), self.num_classes(data),
                                 decoder=m.decoder, decoder_channels=m.decoder_channels, dropout=m.dropout,
                                 aux_head=m.aux_weight > 0)

    def build_evaluator(self, data: SegmentationDataInfo) -> SegmentationEvaluator:
        return SegmentationEvaluator(data.classes, data.ignore_index)

    def inference_protocol(self, pad_to: int) -> str:
        """How evaluation and prediction ran the model, for ``protocol.md`` (the numbers depend on it)."""
        i = self.cfg.model.inference
        pad = (f"padded bottom / right with 0 (the mean colour after normalisation) to the next multiple of "
               f"{pad_to} px (the deepest stride); the padding's logits are cropped off")
        how = (f"each image alone at its own size, {pad}" if i.mode == "whole" else
               f"each image alone in sliding {i.window}x{i.window} windows every {i.stride} px (the last window "
               f"aligned to the far edge), logits averaged where windows overlap; an image or window smaller than "
               f"the window is {pad}")
        flip = "; logits averaged with the horizontally flipped image's, flipped back" if i.flip else ""
        return f"argmax of the logits; {how}{flip} (model.inference). The same as predict."

    # ------------------------------------------------------------------ steps
    def training_step(self, model: nn.Module, batch: SegmentationBatch) -> dict[str, torch.Tensor]:
        if not self.cfg.model.aux_weight:
            return self.losses(model(batch.images), None, batch.masks)
        return self.losses(*model(batch.images, aux=True), batch.masks)

    def losses(self, logits: torch.Tensor, aux_logits: torch.Tensor | None, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """The configured loss terms, plus the auxiliary head's (weighted by ``model.aux_weight``) when given."""
        losses = self.loss(logits, masks)
        if aux_logits is not None:
            weight = self.cfg.model.aux_weight
            losses |= {f"loss_aux_{k.removeprefix('loss_')}": weight * v for k, v in self.loss(aux_logits, masks).items()}
        return losses

    def evaluation_step(self, model: nn.Module, batch: SegmentationBatch):
        """Each image runs alone, cropped to its own size: what ``predict`` does, so the prediction never
        depends on the batch size or on the batch-mates' sizes (MMSegmentation and torchvision evaluate one
        image at a time too). The collate's padding keeps prediction 0 and is never scored (ignore_index)."""
        images, masks, sizes = batch.images, batch.masks, batch.sizes
        predictions = torch.zeros_like(masks)
        for k, (h, w) in enumerate(sizes.tolist()):
            predictions[k, :h, :w] = self.logits(model, images[k:k + 1, :, :h, :w]).argmax(1)[0]
        return predictions.cpu(), masks.cpu()

    def logits(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Evaluation / prediction logits with the configured inference (whole or sliding window, flip)."""
        i = self.cfg.model.inference
        return infer_logits(model, images, mode=i.mode, window=i.window, stride=i.stride, flip=i.flip)

    # ------------------------------------------------------------------ reports
    def write_report(self, run_dir: Path, model: nn.Module, evaluator: SegmentationEvaluator,
                     data: SegmentationDataInfo, device: torch.device) -> None:
        """The evaluator's tables and plots, plus ``plots/predictions.png``: image, ground truth and prediction
        overlays of the first validation images."""
        evaluator.inference = self.inference_protocol(model.pad_to)
        evaluator.write_report(run_dir)
        if data.val is None or not len(data.val):
            return
        palette = data.palette()
        images, captions = [], []
        with eval_mode(model), torch.no_grad():
            for index in range(min(6, len(data.val))):
                tensor, mask, _ = data.val[index]
                rgb, _ = data.val.load(index)
                predicted = self.logits(model, tensor[None].to(device)).argmax(1)[0].cpu().numpy()
                name = data.val.samples[index].stem
                images += [rgb, overlay(rgb, mask.numpy(), palette), overlay(rgb, predicted, palette)]
                captions += [name, f"{name}: ground truth", f"{name}: prediction"]
        save_image_grid(images, captions, Path(run_dir) / "plots" / "predictions.png",
                        "Validation images, ground truth and prediction", cols=6,
                        legend={name: palette[i] for i, name in enumerate(data.classes) if i}
                        | {"ignored": palette[data.ignore_index % 256]})


def _deepest_stride(backbone: BackboneConfig) -> int:
    """The deepest declared stride of ``backbone`` as configured, from a weightless build on the meta device (raises
    the backbone's ConfigError, e.g. a dilation it cannot honour)."""
    with torch.device("meta"):
        built = build_backbone_from_config(dataclasses.replace(backbone, pretrained=None))
    return max(spec.stride for spec in built.feature_specs)
