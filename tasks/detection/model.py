"""Faster R-CNN + FPN from torchvision's parts around any registry backbone.

The module tree mirrors torchvision's ``fasterrcnn_resnet50_fpn`` (``backbone.body``,
``backbone.fpn``, ``rpn``, ``roi_heads``), so its state dict loads strictly into our
resnet50-FPN detector. Necks and heads are sized from the backbone's ``feature_specs``.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign, boxes as box_ops, roi_align
from torchvision.ops.poolers import _setup_scales
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ...backbone import Backbone
from ...config import setting
from ...errors import ConfigError


class FPNBackbone(nn.Module):
    """Registry backbone -> torchvision FPN with an extra max-pooled level (Lin et al. 2017, P6).

    Outputs an OrderedDict with the names of the features it reads (e.g. ``c2..c5``) plus ``"pool"``,
    each with ``out_channels`` channels. ``features`` picks some of the backbone's features (default: all), e.g. when
    a joint model's backbone also feeds a segmentation decoder that reads a finer level than the detector needs.
    """

    def __init__(self, body: Backbone, out_channels: int = 256, features: list[str] | None = None) -> None:
        super().__init__()
        self.body = body
        specs = {s.name: s for s in body.feature_specs}
        self.feature_names = list(features) if features else list(specs)
        self.fpn = FeaturePyramidNetwork([specs[n].channels for n in self.feature_names], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels  # read by torchvision's RPN / RoI heads

    def pyramid(self, features: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        """The backbone's features -> the FPN levels built on the ones this detector reads."""
        return self.fpn(OrderedDict((n, features[n]) for n in self.feature_names))

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """(N, 3, H, W) -> {name: (N, out_channels, H/s, W/s)} for every level, finest first."""
        return self.pyramid(self.body(x))


class ExportableTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform whose evaluation-time resize computes the output size in float32, as its
    own traced (ONNX) graph does, so eager and exported models see the same pixels.

    torchvision's eager path computes the resize scale in Python double precision, its traced path in float32;
    on 3,242 of 16,660 image sizes tried (60-400 px, min 160 / max 240) the two land one pixel apart, which
    moves every detection of such an image (and flipped proposals enough to fail the export parity check on
    the demo detector). Here eager evaluation takes the float32 size (the same on all 16,660 sizes as ONNX
    Runtime's) and resizes to it; training (random ``min_size`` choice) and tracing run torchvision's code.
    """

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None):
        if self.training or self.fixed_size is not None or torchvision._is_tracing():
            return super().resize(image, target)
        h, w = image.shape[-2:]
        shape = torch.tensor([h, w], dtype=torch.float32)
        scale = torch.min(float(self.min_size[-1]) / shape.min(), float(self.max_size) / shape.max())
        size = [int(v) for v in torch.floor(shape * scale)]
        image = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], [h, w], size)
        return image, target


class _ThreadedRoIAlign(torch.autograd.Function):
    """torchvision's CPU ``roi_align`` (aligned=False) whose forward and backward run torchvision's own kernels on as
    many slices of the channels as torch has threads, at once.

    torchvision's CPU kernels run on one thread (the backward costs several times the forward); in a small
    detector's training step they are among the largest costs (docs/benchmarks.md, "RoIAlign and RPN on every
    thread"). Each slice is the kernels' own computation for its channels, so the pooled values and the gradient
    are torchvision's (a test compares them) and each thread writes its own part of them.
    """

    @staticmethod
    def forward(ctx, feature: torch.Tensor, rois: torch.Tensor, scale: float, output_size: tuple[int, int],
                sampling_ratio: int) -> torch.Tensor:
        ctx.save_for_backward(rois)
        ctx.geometry = (scale, *output_size, *feature.shape, sampling_ratio)

        def part(c: slice) -> torch.Tensor:
            return torch.ops.torchvision.roi_align(feature[:, c], rois, scale, *output_size, sampling_ratio, False)

        return _on_channel_slices(part, feature.shape[1], len(rois))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rois,) = ctx.saved_tensors
        scale, height, width, batch, channels, *rest = ctx.geometry

        def part(c: slice) -> torch.Tensor:
            return torch.ops.torchvision._roi_align_backward(grad[:, c], rois, scale, height, width, batch,
                                                              c.stop - c.start, *rest, False)

        return _on_channel_slices(part, channels, len(rois)), None, None, None, None


def _on_channel_slices(part, channels: int, rois: int) -> torch.Tensor:
    """``part(slice(0, channels))``, computed as one slice of the channels per torch thread at once, concatenated."""
    count = min(torch.get_num_threads(), channels // SPLIT_MIN_CHANNELS) if rois else 1
    if count < 2:
        return part(slice(0, channels))
    bounds = [channels * k // count for k in range(count + 1)]
    return torch.cat(list(_threads(count, os.getpid()).map(part, [slice(a, b) for a, b in zip(bounds, bounds[1:])])),
                     dim=1)


SPLIT_MIN_CHANNELS = 16  # fewer channels per thread than this: one thread (starting threads costs more than it saves)
THREADED = True  # False: torchvision's one-thread CPU code in the RoI pooler and the RPN (the benchmark's reference)


@functools.lru_cache(maxsize=None)
def _threads(count: int, pid: int) -> ThreadPoolExecutor:
    """One pool per thread count and process (a forked child has none of its parent's threads)."""
    return ThreadPoolExecutor(count, thread_name_prefix="detector")


class ThreadedProposals(RegionProposalNetwork):
    """torchvision's RPN, whose CPU training filters the images' proposals (clipping, small and low-scoring boxes
    out, NMS per level, the top ``post_nms_top_n``) on as many images at once as torch has threads.

    torchvision's NMS kernel runs on one thread, once per image and FPN level; in a small detector's training step
    it is one of the largest costs left on one core. The batched part and each image's part are torchvision's own
    steps on the same tensors, so the proposals are torchvision's (a test compares them). Evaluation, one image,
    one thread, a GPU and tracing run torchvision's code.
    """

    def filter_proposals(self, proposals: torch.Tensor, objectness: torch.Tensor, image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        images = proposals.shape[0]
        count = min(torch.get_num_threads(), images)
        if (count < 2 or not THREADED or not self.training or proposals.device.type != "cpu" or torchvision._is_tracing()
                or torch.compiler.is_compiling()):
            return super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        # the batched part, as torchvision does it: the top pre_nms_top_n per level, their levels and probabilities
        objectness = objectness.detach().reshape(images, -1)
        levels = torch.cat([torch.full((n,), k, dtype=torch.int64) for k, n in enumerate(num_anchors_per_level)])
        levels = levels.reshape(1, -1).expand_as(objectness)
        top = self._get_top_n_idx(objectness, num_anchors_per_level)
        rows = torch.arange(images)[:, None]
        objectness, levels, proposals = objectness[rows, top], levels[rows, top], proposals[rows, top]
        probabilities = torch.sigmoid(objectness)

        def one(k: int) -> tuple[torch.Tensor, torch.Tensor]:  # torchvision's loop body for image k
            boxes = box_ops.clip_boxes_to_image(proposals[k], image_shapes[k])
            keep = box_ops.remove_small_boxes(boxes, self.min_size)
            boxes, scores, level = boxes[keep], probabilities[k][keep], levels[k][keep]
            keep = torch.where(scores >= self.score_thresh)[0]
            boxes, scores, level = boxes[keep], scores[keep], level[keep]
            keep = box_ops.batched_nms(boxes, scores, level, self.nms_thresh)[: self.post_nms_top_n()]
            return boxes[keep], scores[keep]

        found = list(_threads(count, os.getpid()).map(one, range(images)))
        return [boxes for boxes, _ in found], [scores for _, scores in found]


class ExportableRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign``, whose traced (ONNX) graph merges the per-level results with one
    row gather instead of a ScatterElements over every pooled value, and whose CPU training runs torchvision's
    forward and backward kernels on every thread (:class:`_ThreadedRoIAlign`).

    torchvision's traced path scatters each level's ``(k, C, 7, 7)`` results element by element into a zeros
    tensor (``_onnx_merge_levels``); in ONNX Runtime that scatter, its index ``Expand`` and the zeros took ~2/3
    of the detector's time at the demo size (docs/benchmarks.md). Here the levels' results are concatenated and
    put back in RoI order by ``argsort`` of their indices: the same values (a test checks the traced graph
    against eager). Evaluation, and training on a GPU, run torchvision's own forward unchanged.
    """

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        tracing = torchvision._is_tracing()
        features = [x[name] for name in self.featmap_names]
        split = (THREADED and not tracing and torch.is_grad_enabled() and not torch.compiler.is_compiling()
                 and all(f.device.type == "cpu" and f.dtype == torch.float32 and f.requires_grad for f in features))
        if not (tracing or split):
            return super().forward(x, boxes, image_shapes)
        # torchvision's own level scales and FPN level mapper (Lin et al. 2017, eq. 1), set up as it does
        self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale, self.canonical_level)
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        levels = self.map_levels(boxes)
        pooled, order = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            index = torch.where(levels == level)[0]
            if split:
                pooled.append(_ThreadedRoIAlign.apply(feature, rois[index], float(scale), self.output_size,
                                                      self.sampling_ratio))
            else:
                pooled.append(roi_align(feature, rois[index], self.output_size, scale, self.sampling_ratio)
                              .to(features[0].dtype))
            order.append(index)
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]


@dataclass
class DetectorSettings:
    """Faster R-CNN hyper-parameters (torchvision's defaults; Ren et al. 2015, Lin et al. 2017)."""

    fpn_channels: int = setting(256, "channels of every FPN level, read by the RPN and the RoI box head", ge=1)
    fpn_features: list[str] = setting(factory=list, help="the backbone features the FPN reads, finest first (empty: "
                                                         "all of model.backbone.out_features)")
    anchor_sizes: list[list[int]] = setting(factory=lambda: [[32], [64], [128], [256], [512]],
                                            help="anchor sizes in input pixels, one list per FPN level (the backbone's "
                                                 "features, then pool)", ge=1)
    aspect_ratios: list[float] = setting(factory=lambda: [0.5, 1.0, 2.0], help="anchor height / width ratios, the "
                                                                               "same at every level", gt=0)
    min_size: int = setting(800, "images are resized so the shorter side is this many pixels (unless max_size caps "
                                 "it)", ge=1)
    max_size: int = setting(1333, "the longer side after that resize is at most this many pixels", ge=1)
    rpn_pre_nms_top_n_train: int = setting(2000, "training: RPN proposals kept per FPN level before NMS", ge=1)
    rpn_pre_nms_top_n_test: int = setting(1000, "inference: RPN proposals kept per FPN level before NMS", ge=1)
    rpn_post_nms_top_n_train: int = setting(2000, "training: RPN proposals kept per image after NMS", ge=1)
    rpn_post_nms_top_n_test: int = setting(1000, "inference: RPN proposals kept per image after NMS", ge=1)
    rpn_batch_size_per_image: int = setting(256, "anchors sampled per image for the RPN loss", ge=1)
    rpn_positive_fraction: float = setting(0.5, "largest fraction of positive anchors in that sample", gt=0, le=1)
    box_batch_size_per_image: int = setting(512, "proposals sampled per image for the box-head loss", ge=1)
    box_positive_fraction: float = setting(0.25, "largest fraction of positive proposals in that sample", gt=0, le=1)
    representation_size: int = setting(1024, "width of the box head's two fully connected layers", ge=1)
    box_score_thresh: float = setting(0.05, "inference: detections scoring below this are dropped", ge=0, le=1)
    box_nms_thresh: float = setting(0.5, "inference: IoU threshold of the per-class NMS", ge=0, le=1)
    box_detections_per_img: int = setting(100, "inference: at most this many detections per image (highest scores "
                                               "first)", ge=1)

    def validate(self) -> None:
        """Cross-field checks (the config loader prefixes ``model.``)."""
        if self.max_size < self.min_size:
            raise ConfigError(f"max_size={self.max_size} is smaller than model.min_size={self.min_size}: the shorter "
                              f"side is resized to min_size unless the longer would exceed max_size; set "
                              f"model.max_size >= {self.min_size}")


def build_faster_rcnn(body: Backbone, num_classes: int, settings: DetectorSettings) -> FasterRCNN:
    """Faster R-CNN with FPN on ``body``.

    Args:
        body: registry backbone; every declared feature feeds the FPN.
        num_classes: object classes + 1 (label 0 is background, torchvision's convention).
        settings: anchors, sizes, sampling and post-processing.

    Returns:
        torchvision's ``FasterRCNN`` (train mode: ``model(images, targets) -> losses``;
        eval mode: ``model(images) -> [{"boxes", "labels", "scores"}]`` in input-image pixels).
    """
    declared = [s.name for s in body.feature_specs]
    missing = [n for n in settings.fpn_features if n not in declared]
    if missing:
        raise ConfigError(f"model.fpn_features names {', '.join(missing)}, which the backbone does not output "
                          f"(model.backbone.out_features: {', '.join(declared)})")
    order = [declared.index(n) for n in settings.fpn_features]
    if any(b <= a for a, b in zip(order, order[1:])):
        raise ConfigError(f"model.fpn_features={settings.fpn_features} must name each feature once, finest first, in "
                          f"the order of model.backbone.out_features ({', '.join(declared)})")
    backbone = FPNBackbone(body, settings.fpn_channels, settings.fpn_features)
    levels = len(backbone.feature_names) + 1  # + the max-pooled level
    if len(settings.anchor_sizes) != levels:
        raise ConfigError(
            f"model.anchor_sizes has {len(settings.anchor_sizes)} levels but the FPN has {levels} "
            f"({', '.join(backbone.feature_names)}, pool)"
        )
    anchors = AnchorGenerator(
        sizes=tuple(tuple(s) for s in settings.anchor_sizes), aspect_ratios=(tuple(settings.aspect_ratios),) * levels
    )
    roi_pool = ExportableRoIAlign(featmap_names=backbone.feature_names, output_size=7, sampling_ratio=2)
    head = TwoMLPHead(settings.fpn_channels * 7 * 7, settings.representation_size)
    model = FasterRCNN(
        backbone,
        min_size=settings.min_size,
        max_size=settings.max_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=settings.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=settings.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=settings.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=settings.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=settings.rpn_batch_size_per_image,
        rpn_positive_fraction=settings.rpn_positive_fraction,
        box_roi_pool=roi_pool,
        box_head=head,
        box_predictor=FastRCNNPredictor(settings.representation_size, num_classes),
        box_batch_size_per_image=settings.box_batch_size_per_image,
        box_positive_fraction=settings.box_positive_fraction,
        box_score_thresh=settings.box_score_thresh,
        box_nms_thresh=settings.box_nms_thresh,
        box_detections_per_img=settings.box_detections_per_img,
    )
    t = model.transform
    model.transform = ExportableTransform(t.min_size, t.max_size, t.image_mean, t.image_std)
    model.rpn.__class__ = ThreadedProposals  # the same module and weights (FasterRCNN builds its RPN itself)
    return model


def detect_from_features(model: FasterRCNN, images: ImageList, features: dict[str, torch.Tensor],
                         targets: list[dict[str, torch.Tensor]] | None = None):
    """The detector after its body: FPN, RPN and RoI heads on ``features``, the body's output for ``images`` (already
    through ``model.transform``; a joint model's shared pass computes them once for several heads). Returns
    ``(detections in the transformed images' pixels, losses)``: what ``FasterRCNN.forward`` does between its body
    and its postprocessing."""
    pyramid = model.backbone.pyramid(features)
    proposals, rpn_losses = model.rpn(images, pyramid, targets)
    detections, box_losses = model.roi_heads(pyramid, proposals, images.image_sizes, targets)
    return detections, {**rpn_losses, **box_losses}


def set_frozen_bn_eps(model: nn.Module, eps: float) -> None:
    """torchvision's COCO_V1 detector weights were trained with FrozenBatchNorm eps = 0
    (``overwrite_eps`` in torchvision); using 1e-5 with them shifts every activation slightly."""
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = eps
