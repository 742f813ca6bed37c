"""Segmentation network: a registry backbone + a segmentation-models-pytorch decoder and head.

smp's decoders (``FPNDecoder``, ``UnetDecoder``) take the list of encoder features that smp's own encoders
produce: one map per power-of-two stride ``1, 2, 4, ..., 2**depth``, the stride-1 entry being the input
itself. Our backbones return a dict of named maps with declared strides (``feature_specs``) that need not
cover every level (ResNet: ``c1`` at 2, ``c2..c5`` at 4..32; CIFAR nets stop at stride 4; timm models vary).
:class:`DecoderFeatures` is the one place that turns the dict into smp's list: each level takes the deepest
declared map of that stride, and a level without one gets an empty (zero-channel) map of the right size,
which smp's U-Net concatenates as "no skip" and its FPN never reads (it uses strides 4..32). DeepLabV3 reads
the deepest map, DeepLabV3+ the deepest and the stride-4 one; both need a backbone dilated to output stride 8
or 16 (``model.backbone.output_stride``), whose deepest stages then share a stride (the deepest map wins).

The input is zero-padded to a multiple of the deepest stride (smp's FPN adds maps of exactly doubled
sizes), and the logits are upsampled to the padded input and cropped back: the output always has the
input's height and width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.heads import SegmentationHead
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3Decoder, DeepLabV3PlusDecoder
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss
from torch import nn
from torchvision.models.segmentation.fcn import FCNHead

from ...backbone import Backbone
from ...backbone.base import FeatureSpec
from ...errors import ConfigError

DECODERS = ("fpn", "unet", "deeplabv3", "deeplabv3plus")
# smp's default output stride of each DeepLab (the backbone's, when model.backbone.output_stride is unset)
DEEPLAB_OUTPUT_STRIDE = {"deeplabv3": 8, "deeplabv3plus": 16}
LOSSES = ("ce", "dice", "focal")
# smp.Unet's default decoder widths, deepest block first; a shallower backbone uses the last ones.
UNET_CHANNELS = (256, 128, 64, 32, 16)



def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """``(..., H, W)`` images padded bottom / right with zeros so that both sides are multiples of ``multiple`` (the
    deepest stride): what the model, the exported graph's caller and the export's examples do alike."""
    h, w = images.shape[-2:]
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    return F.pad(images, (0, pw - w, 0, ph - h)) if (ph, pw) != (h, w) else images

class DecoderFeatures(nn.Module):
    """Maps a backbone's feature dict to smp's per-stride list ``[stride 1, 2, 4, ..., 2**depth]``.

    Args:
        specs: The backbone's declared outputs.

    Attributes:
        depth: ``log2`` of the deepest stride (5 for a ResNet).
        channels: Channels per level, as smp's ``encoder_channels`` (``0`` for an empty level; level 0 = input).
        names: The feature name taken at each level (``None``: empty).
    """

    def __init__(self, specs: Sequence[FeatureSpec], in_channels: int = 3) -> None:
        super().__init__()
        by_level: dict[int, FeatureSpec] = {}
        for spec in specs:
            level = round(math.log2(spec.stride)) if spec.stride > 0 else -1
            if level < 0 or 2 ** level != spec.stride:
                raise ConfigError(f"backbone feature {spec.name!r} has stride {spec.stride}; the segmentation "
                                  "decoders need power-of-two strides")
            by_level[level] = spec  # specs are in network order: the deepest map of a stride wins
        self.depth = max(by_level)
        if self.depth < 1:
            raise ConfigError(f"the backbone's features {[s.name for s in specs]} never down-sample; "
                              "a segmentation decoder needs strides 2 and more")
        self.names = [None] + [by_level[k].name if k in by_level else None for k in range(1, self.depth + 1)]
        self.channels = [in_channels] + [by_level[k].channels if k in by_level else 0
                                         for k in range(1, self.depth + 1)]

    def forward(self, x: torch.Tensor, features: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        n, _, h, w = x.shape
        out = [x]
        for level, name in enumerate(self.names[1:], start=1):
            if name is None:
                s = 2 ** level
                out.append(x.new_zeros(n, 0, -(-h // s), -(-w // s)))
            else:
                out.append(features[name])
        return out


class SegmentationModel(nn.Module):
    """``backbone -> DecoderFeatures -> smp decoder -> smp SegmentationHead``; logits at input resolution.

    Args:
        backbone: Any registry backbone (its declared outputs feed the decoder).
        num_classes: Output channels.
        decoder: ``"fpn"`` (smp's FPN: pyramid at strides 4..32, merged at stride 4), ``"unet"``,
            ``"deeplabv3"`` (ASPP on the deepest map) or ``"deeplabv3plus"`` (ASPP + the stride-4 map); the
            DeepLabs need a backbone dilated to output stride 8 or 16.
        decoder_channels: U-Net: one width per decoder block, deepest first (``depth`` values); FPN:
            ``[pyramid_channels, segmentation_channels]``; DeepLab: ``[aspp_channels]``. ``None``: smp's defaults.
        dropout: FPN's dropout before the head; DeepLab's in the ASPP projection.
        aux_head: Add torchvision's ``FCNHead`` on the backbone's second-deepest declared feature (``c4`` on a
            ResNet, the map torchvision's FCN / DeepLabV3 give their auxiliary classifier). ``model(x, aux=True)`` then also
            returns its logits, for an auxiliary training loss that reaches the deep layers directly (deep
            supervision, as MMSegmentation's ``auxiliary_head``); evaluation and export never run it.
    """

    def __init__(self, backbone: Backbone, num_classes: int, decoder: str = "unet",
                 decoder_channels: Sequence[int] | None = None, dropout: float = 0.2, aux_head: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.features = DecoderFeatures(backbone.feature_specs)
        depth, channels = self.features.depth, self.features.channels
        self.pad_to = 2 ** depth
        if decoder == "unet":
            if decoder_channels:
                widths = list(decoder_channels)
            else:  # smp's defaults; a shallower backbone keeps the last ones, a deeper one repeats the first
                widths = [UNET_CHANNELS[0]] * max(depth - 5, 0) + list(UNET_CHANNELS[max(5 - depth, 0):])
            if len(widths) != depth:
                raise ConfigError(f"model.decoder_channels has {len(widths)} values; the U-Net on this backbone "
                                  f"has {depth} blocks (strides {2 ** depth}..1), one width each")
            self.decoder = UnetDecoder(encoder_channels=channels, decoder_channels=widths, n_blocks=depth)
            self.head = SegmentationHead(widths[-1], num_classes, kernel_size=3)
        elif decoder == "fpn":
            if depth < 5:
                raise ConfigError(f"model.decoder=fpn needs backbone features down to stride 32 (smp's FPN reads "
                                  f"strides 4..32); this backbone stops at stride {2 ** depth}: use decoder=unet")
            if any(channels[k] == 0 for k in range(2, 6)):
                missing = [2 ** k for k in range(2, 6) if channels[k] == 0]
                raise ConfigError(f"model.decoder=fpn needs backbone features at strides 4, 8, 16, 32; none at "
                                  f"{missing}: add them to model.backbone.out_features")
            if decoder_channels is not None and len(decoder_channels) != 2:
                raise ConfigError(f"model.decoder_channels for decoder=fpn is [pyramid_channels, "
                                  f"segmentation_channels], got {list(decoder_channels)}")
            pyramid, segmentation = decoder_channels or (256, 128)
            if segmentation % 32:
                raise ConfigError(f"model.decoder_channels: FPN's segmentation_channels ({segmentation}) must be a "
                                  "multiple of 32 (smp's FPN normalises them with GroupNorm(32 groups))")
            # smp's FPN reads the last four levels: keep the list ending at stride 32
            self.features.names = self.features.names[:6]
            self.decoder = FPNDecoder(encoder_channels=channels[:6], encoder_depth=5, pyramid_channels=pyramid,
                                      segmentation_channels=segmentation, dropout=dropout)
            # as smp.FPN: 1x1 conv at stride 4, bilinear x4 upsampling inside the head
            self.head = SegmentationHead(segmentation, num_classes, kernel_size=1, upsampling=4)
        elif decoder in DEEPLAB_OUTPUT_STRIDE:
            stride = 2 ** depth
            if stride not in (8, 16):
                raise ConfigError(f"model.decoder={decoder} needs a backbone of output stride 8 or 16 (dilated, "
                                  f"model.backbone.output_stride); this one's deepest stride is {stride}")
            if decoder_channels is not None and len(decoder_channels) != 1:
                raise ConfigError(f"model.decoder_channels for decoder={decoder} is [aspp_channels], got "
                                  f"{list(decoder_channels)}")
            width = decoder_channels[0] if decoder_channels else 256
            if decoder == "deeplabv3":
                self.decoder = DeepLabV3Decoder(in_channels=channels[-1], out_channels=width,
                                                atrous_rates=(12, 24, 36), aspp_separable=False, aspp_dropout=dropout)
                self.head = SegmentationHead(width, num_classes, kernel_size=1, upsampling=stride)
            else:
                if channels[2] == 0:
                    raise ConfigError("model.decoder=deeplabv3plus needs a backbone feature at stride 4 (c2 of a "
                                      "ResNet): add it to model.backbone.out_features")
                # smp's DeepLabV3Plus: ASPP on the deepest map, upsampled to stride 4 and fused with it
                self.decoder = DeepLabV3PlusDecoder(encoder_channels=channels, encoder_depth=5, out_channels=width,
                                                    atrous_rates=(12, 24, 36), output_stride=stride,
                                                    aspp_separable=True, aspp_dropout=dropout)
                self.head = SegmentationHead(width, num_classes, kernel_size=1, upsampling=4)
        else:
            raise ConfigError(f"unknown model.decoder {decoder!r}; choose from {', '.join(DECODERS)}")
        self.num_classes = num_classes
        self.aux_feature = None
        if aux_head:
            specs = backbone.feature_specs
            if len(specs) < 2:
                raise ConfigError("model.aux_weight needs a backbone feature above the deepest one (e.g. c4 of a "
                                  f"ResNet); this backbone declares only {specs[-1].name!r}")
            self.aux_feature = specs[-2].name
            self.aux_head = FCNHead(specs[-2].channels, num_classes)

    def forward(self, x: torch.Tensor, aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` normalised images -> ``(N, num_classes, H, W)`` logits; with ``aux=True`` (training
        with an auxiliary head) ``(logits, aux_logits)``, both at input resolution."""
        h, w = x.shape[-2:]
        out = self.forward_padded(pad_to_multiple(x, self.pad_to), aux)
        return tuple(o[..., :h, :w] for o in out) if aux else out[..., :h, :w]

    def forward_padded(self, x: torch.Tensor, aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits of images whose sides are multiples of ``pad_to`` (what ONNX export traces: the padding
        arithmetic stays outside the graph); ``aux`` as in :meth:`forward`."""
        if aux and self.aux_feature is None:
            raise ValueError("this model has no auxiliary head (built with aux_head=False)")
        return self.decode(x, self.backbone(x), aux)

    def decode(self, x: torch.Tensor, features: Mapping[str, torch.Tensor],
               aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (``aux``: and auxiliary logits) at the resolution of ``x`` from the backbone's ``features`` of
        ``x`` (a joint model's shared pass computes them once for several heads)."""
        logits = self._upsample(self.head(self.decoder(self.features(x, features))), x)
        if not aux:
            return logits
        return logits, self._upsample(self.aux_head(features[self.aux_feature]), x)

    @staticmethod
    def _upsample(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


class SegmentationLoss(nn.Module):
    """Weighted sum of cross-entropy (torch), Dice and Focal (smp), every term skipping ``ignore_index``.

    Cross-entropy is torch's ``F.cross_entropy``: it averages over the valid pixels only, as MMSegmentation and
    torchvision's reference do (smp's ``SoftCrossEntropyLoss`` also divides by the ignored pixels).

    Args:
        weights: ``{"ce": 1.0, "dice": 0.5, ...}``; terms of weight 0 are not computed.
        ignore_index: Mask value that no term scores.
    """

    def __init__(self, weights: Mapping[str, float], ignore_index: int = 255) -> None:
        super().__init__()
        unknown = sorted(set(weights) - set(LOSSES))
        if unknown:
            raise ConfigError(f"unknown model.loss term {unknown[0]!r}; choose from {', '.join(LOSSES)}")
        if any(not isinstance(v, (int, float)) or v < 0 for v in weights.values()):
            raise ConfigError(f"model.loss weights must be numbers >= 0, got {dict(weights)}")
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        if not self.weights:
            raise ConfigError(f"model.loss has no term with a positive weight: {dict(weights)}")
        self.ignore_index = ignore_index
        self.dice = DiceLoss("multiclass", ignore_index=ignore_index) if "dice" in self.weights else None
        self.focal = FocalLoss("multiclass", ignore_index=ignore_index) if "focal" in self.weights else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.float()
        losses = {}
        for name, weight in self.weights.items():
            if name == "ce":
                value = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
                if not (target != self.ignore_index).any():  # all ignored: torch gives NaN, no signal is 0
                    value = logits.sum() * 0.0
            elif name == "dice":
                value = self.dice(logits, target)
            else:
                value = self.focal(logits, target)
            losses[f"loss_{name}"] = weight * value
        return losses


@torch.no_grad()
def sliding_window_logits(model: nn.Module, images: torch.Tensor, window: int, stride: int,
                          batch: int = 4) -> torch.Tensor:
    """Logits of ``images`` from overlapping ``window x window`` tiles, averaged where tiles overlap.

    Tiles start every ``stride`` pixels and the last one in each direction is aligned to the image edge, so
    every pixel is covered; an image smaller than the window is one tile (the model pads it). ``batch`` tiles
    are run at a time.
    """
    if not 0 < stride <= window:
        raise ValueError(f"sliding window: stride must be in [1, window={window}] to cover every pixel, got {stride}")
    n, _, h, w = images.shape
    starts_y = _starts(h, window, stride)
    starts_x = _starts(w, window, stride)
    tiles = [(y, x) for y in starts_y for x in starts_x]
    total = count = None
    for i in range(0, len(tiles), batch):
        chunk = tiles[i:i + batch]
        crops = torch.cat([images[:, :, y:y + window, x:x + window] for y, x in chunk])
        out = model(crops).float()
        if total is None:
            total = out.new_zeros(n, out.shape[1], h, w)
            count = out.new_zeros(1, 1, h, w)
        for j, (y, x) in enumerate(chunk):
            part = out[j * n:(j + 1) * n]
            total[:, :, y:y + part.shape[2], x:x + part.shape[3]] += part
            count[:, :, y:y + part.shape[2], x:x + part.shape[3]] += 1
    return total / count


def _starts(size: int, window: int, stride: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return starts + [size - window]


@torch.no_grad()
def infer_logits(model: nn.Module, images: torch.Tensor, mode: str = "whole", window: int = 512,
                 stride: int = 341, flip: bool = False) -> torch.Tensor:
    """``(N, C, H, W)`` logits for evaluation / prediction: whole-image or sliding-window, optionally averaged
    with the horizontally flipped input's logits (flipped back)."""
    def run(x: torch.Tensor) -> torch.Tensor:
        return model(x).float() if mode == "whole" else sliding_window_logits(model, x, window, stride)

    logits = run(images)
    if flip:
        logits = (logits + run(images.flip(-1)).flip(-1)) / 2
    return logits
