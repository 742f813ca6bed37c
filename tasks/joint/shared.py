"""The shared pass of a joint run (``data.same_input: true``): heads that read the same images take one image batch
and one backbone forward per batch.

Built for the heads that see whole images at one scale: detection and segmentation. Their datasets are read once,
paired by image file name (the detection split's images, each with the segmentation split's mask of the same name:
e.g. one COCO instances file with polygons read by both heads' ``coco`` adapters, or the built-in shapes scenes,
whose COCO boxes and VOC masks describe the same images). One augmentation moves the image, its boxes and its mask
together (the detection head's ``data`` settings: scale jitter, flip, colour jitter; the segmentation head's crop and
scale settings are not used). The input both heads see is the detector's: torchvision's ``GeneralizedRCNNTransform``
(normalised, shorter side resized to the detection head's ``min_size``, batched with zero padding to a multiple of
32); the masks are resized with it (nearest) and padded with ``ignore_index``. The backbone runs once on that batch;
the detector's FPN, RPN and RoI heads and the segmentation decoder both read its features.

Evaluation and prediction run each image alone (as either single-task head does): boxes are mapped back to the
image's pixels by the detector's postprocessing, the segmentation logits are cropped to the resized image and
upsampled (bilinear) to the image's own size. The segmentation head's ``model.inference`` (sliding windows, flip)
is not used: one pass means one whole-image pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList

from ...datasets.detection import DetectionData, DetectionDataset
from ...datasets.segmentation import SegmentationData
from ...errors import ConfigError, DataError
from ..base import Batch
from ..detection.model import detect_from_features
from ..segmentation.model import pad_to_multiple

SHARED_PASS_HEADS = ("detection", "segmentation")


def pair_by_image(boxes: DetectionData, masks: SegmentationData, split: str) -> list[int]:
    """For each image of the detection split, the index of the segmentation sample of the same file name."""
    by_stem = {s.stem: k for k, s in enumerate(masks.samples)}
    pairs = []
    for sample in boxes.samples:
        stem = Path(sample.image_path).stem
        if stem not in by_stem:
            raise ConfigError(f"data.same_input: image {sample.image_path} of the detection {split} split has no mask "
                              f"named {stem!r} in the segmentation {split} split (the heads' images are paired by "
                              "file name)")
        pairs.append(by_stem[stem])
    return pairs


class SharedInputDataset(DetectionDataset):
    """The detection split's samples, each with the mask of its paired segmentation sample: item ``i`` is
    ``{"detection": (image, target), "segmentation": (image, mask, i)}``, one image tensor for both, moved with its
    boxes and mask by one augmentation (``transform`` is a detection transform, called with ``mask=``)."""

    def __init__(self, boxes: DetectionData, masks: SegmentationData, pairs: list[int], transform, train: bool,
                 seed: int) -> None:
        super().__init__(boxes, transform, train=train, seed=seed)
        self.masks, self.pairs = masks, pairs

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        image, arrays = self.read(index)
        mask = self.masks.load_mask(self.pairs[index])
        if mask.shape != image.shape[:2]:
            raise DataError(f"{self.masks.mask_name(self.pairs[index])} is {mask.shape[1]}x{mask.shape[0]} (WxH) but "
                            f"its image {self.samples[index].image_path} is {image.shape[1]}x{image.shape[0]}")
        self.reseed(index)
        tensor, *arrays, mask = self.transform(image, *arrays, mask=mask)
        return {"detection": (tensor, self.target(index, *arrays)), "segmentation": (tensor, mask, index)}


@dataclass
class SharedBatch(Batch):
    """One batch for the heads of the shared pass: ``images`` (a list of ``(3, H, W)`` images in ``[0, 1]``, sizes
    differ), the detection ``targets`` and the segmentation ``masks`` (one ``(H, W)`` mask per image)."""

    targets: list[dict[str, Any]]
    masks: list[torch.Tensor]


def collate_shared(samples: list[dict[str, Any]]) -> SharedBatch:
    return SharedBatch([s["detection"][0] for s in samples], [s["detection"][1] for s in samples],
                       [s["segmentation"][1] for s in samples])


def shared_features(detector: torch.nn.Module, segmenter: torch.nn.Module, backbone: torch.nn.Module,
                    images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
    """The one pass both heads read: ``(ImageList, targets resized with it, backbone features)``."""
    inputs, targets = detector.transform(images, targets)
    x = pad_to_multiple(inputs.tensors, segmenter.pad_to)  # the decoder's deepest stride (32 on a ResNet)
    inputs = ImageList(x, inputs.image_sizes)
    return inputs, targets, backbone(x)


def shared_losses(model: torch.nn.Module, batch: SharedBatch, segmentation_task: Any,
                  ignore_index: int) -> dict[str, dict[str, torch.Tensor]]:
    """Each head's losses (``{"detection": {...}, "segmentation": {...}}``) from one backbone forward."""
    detector, segmenter = model.heads["detection"], model.heads["segmentation"]
    targets = [{"boxes": t["boxes"], "labels": t["labels"], "masks": m[None]} for t, m in zip(batch.targets, batch.masks)]
    inputs, targets, features = shared_features(detector, segmenter, model.backbone, batch.images, targets)
    masks = torch.full((len(targets), *inputs.tensors.shape[-2:]), ignore_index, dtype=torch.long,
                       device=inputs.tensors.device)
    for k, target in enumerate(targets):
        resized = target.pop("masks")[0]
        masks[k, :resized.shape[0], :resized.shape[1]] = resized.long()
    _, detection = detect_from_features(detector, inputs, features, targets)
    aux = bool(segmentation_task.cfg.model.aux_weight)
    out = segmenter.decode(inputs.tensors, features, aux=aux)
    segmentation = segmentation_task.losses(*(out if aux else (out, None)), masks)
    return {"detection": detection, "segmentation": segmentation}


def shared_outputs(model: torch.nn.Module, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One image ``(3, H, W)`` in ``[0, 1]`` -> (its detections in its own pixels, ``(1, C, H, W)`` segmentation
    logits at its own size), from one backbone pass."""
    detector, segmenter = model.heads["detection"], model.heads["segmentation"]
    inputs, _, features = shared_features(detector, segmenter, model.backbone, [image])
    detections, _ = detect_from_features(detector, inputs, features)
    size = tuple(image.shape[-2:])
    detections = detector.transform.postprocess(detections, inputs.image_sizes, [size])[0]
    h, w = inputs.image_sizes[0]
    logits = segmenter.decode(inputs.tensors, features)[..., :h, :w].float()
    return detections, F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


#: ``export --quantize int8`` of the shared pass: the name prefixes of the nodes quantized (see JointExport.int8_scopes)
SHARED_INT8_SCOPES = ("/backbone/", "/fpn/", "/rpn/head/", "/roi_heads/box_head/", "/decoder/", "/head/")


class SharedExportModule(nn.Module):
    """What a shared-pass joint run exports: one ``(3, H, W)`` image in ``[0, 1]`` -> ``(boxes, labels, scores)`` in
    its pixels and the segmentation ``logits`` ``(1, C, H, W)`` at its size, from one backbone pass (the resize,
    normalisation, crop and upsampling inside the graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        found, logits = shared_outputs(self.model, image)
        return found["boxes"], found["labels"], found["scores"], logits


class SharedOnnx(nn.Module):
    """The exported shared pass run by ONNX Runtime, called as the joint model's ``shared_outputs``."""

    def __init__(self, runner) -> None:
        super().__init__()
        self.runner = runner

    def shared_outputs(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        out = {k: torch.from_numpy(v) for k, v in self.runner.run(image).items()}
        return {k: out[f"detection.{k}"] for k in ("boxes", "labels", "scores")}, out["segmentation.logits"]
