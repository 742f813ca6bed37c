"""The ResNet family written from scratch, parameter-for-parameter compatible with torchvision.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv:1512.03385), plus the
variants torchvision ships: ResNeXt (Xie et al. 2017, grouped 3x3 convs) and Wide ResNet
(Zagoruyko & Komodakis 2016, wider bottlenecks). Module and parameter names (``conv1``, ``bn1``,
``layer1.0.downsample.0``, ...) and the arithmetic are identical to ``torchvision.models.resnet`` so
that torchvision's ImageNet weights (minus ``fc.*``) load with ``strict=True``.

Like torchvision this is "ResNet v1.5": in a down-sampling bottleneck the stride sits on the 3x3
conv, not on the first 1x1 as in the paper; that costs ~7% more MACs for ResNet-50 (4.1 vs 3.8 G) and
gains ~0.5% top-1. ``custom(stride_in_1x1=True)`` builds the paper's v1 layout.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from resvision.backbone.base import Backbone, FeatureSpec, select_specs
from resvision.backbone.registry import register_backbone
from resvision.errors import ConfigError

__all__ = ["BasicBlock", "Bottleneck", "SqueezeExcite", "ShortcutA", "ResNetConfig", "ResNet",
           "NORM_LAYERS", "TORCHVISION_ARCHS", "CIFAR_ARCHS"]

NormLayer = Callable[[int], nn.Module]
#: ``build_backbone(norm=...)`` -> layer class. FrozenBatchNorm2d keeps weight, bias and statistics as
#: buffers (Detectron2 / torchvision detection default): nothing to train, nothing to re-estimate.
NORM_LAYERS: dict[str, NormLayer] = {"bn": nn.BatchNorm2d, "frozen_bn": FrozenBatchNorm2d}


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (the following BN has one)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, groups=groups, bias=False, dilation=dilation)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class SqueezeExcite(nn.Module):
    """Channel attention of Hu et al. 2018 (SENet): ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``.

    Args:
        channels: Channels ``C`` of the residual branch.
        reduction: Bottleneck ratio r of the gating MLP (16 in the paper); at least 8 hidden units
            so that the 16-channel CIFAR stages keep a usable gate.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Rescales channels: ``(N, C, H, W) -> (N, C, H, W)``."""
        scale = self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


class ShortcutA(nn.Module):
    """Parameter-free shortcut, option A of He et al. 2016 (section 3.3, used for CIFAR in 4.2).

    Identity on the existing channels, sub-sampled by taking every ``stride``-th pixel, with the
    extra output channels filled with zeros: the network keeps exactly the paper's parameter count.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ConfigError(f"shortcut 'A' cannot reduce channels ({in_ch} -> {out_ch}); use shortcut 'B'")
        self.pad = out_ch - in_ch
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride))``."""
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.pad)) if self.pad else x


class BasicBlock(nn.Module):
    """Two 3x3 convs (He et al. 2016, Fig. 5 left), used by ResNet-18/34 and the CIFAR nets.

    Args:
        inplanes: Input channels.
        planes: Output channels (``expansion = 1``).
        stride: Stride of the first 3x3 conv (2 in the first block of stages 2+).
        downsample: Shortcut projection when shape changes, else None (identity).
        groups: Must be 1 (as in torchvision; grouped convs belong to the bottleneck).
        base_width: Must be 64.
        norm_layer: Normalisation layer class.
        se: Add squeeze-excitation before the residual sum.
        stride_in_1x1: Ignored (no 1x1 conv here); accepted so every block has one signature.
        residual: False makes the block "plain" (He et al. 2016, Fig. 3 middle): no shortcut, no sum.
        dilation: Dilation of both 3x3 convs (a stage that dilates instead of striding).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, norm_layer: NormLayer = nn.BatchNorm2d,
                 se: bool = False, stride_in_1x1: bool = False, residual: bool = True, dilation: int = 1) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ConfigError("block 'basic' supports only groups=1 and width_per_group=64 (as torchvision); "
                              "use block 'bottleneck' for ResNeXt / Wide ResNet, or widen with 'widths'")
        self.conv1 = conv3x3(inplanes, planes, stride, dilation=dilation)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = norm_layer(planes)
        self.se = SqueezeExcite(planes) if se else None
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        """``(N, inplanes, H, W) -> (N, planes, H / stride, W / stride)``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        if self.residual:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (He et al. 2016, Fig. 5 right), ``expansion = 4``.

    The 3x3 conv has ``width = int(planes * base_width / 64) * groups`` channels: ``groups > 1`` gives
    ResNeXt's cardinality, ``base_width = 128`` Wide ResNet's doubled bottleneck.

    Args:
        inplanes: Input channels.
        planes: Base width; output channels are ``4 * planes``.
        stride: Down-sampling stride of the block.
        downsample: Shortcut projection when shape changes, else None (identity).
        groups: Groups of the 3x3 conv.
        base_width: Width per group (64 = plain ResNet).
        norm_layer: Normalisation layer class.
        se: Add squeeze-excitation before the residual sum.
        stride_in_1x1: Put the stride on the first 1x1 conv (the paper's v1) instead of on the 3x3
            (torchvision's v1.5, which sees all pixels before sub-sampling).
        residual: False makes the block plain: no shortcut, no sum.
        dilation: Dilation of the 3x3 conv (a stage that dilates instead of striding).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, norm_layer: NormLayer = nn.BatchNorm2d,
                 se: bool = False, stride_in_1x1: bool = False, residual: bool = True, dilation: int = 1) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, width, stride_1x1)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se = SqueezeExcite(planes * self.expansion) if se else None
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        """``(N, inplanes, H, W) -> (N, 4 * planes, H / stride, W / stride)``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        if self.residual:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
STEMS = ("imagenet", "cifar", "deep")
OUTPUT_STRIDES = (8, 16)  # DeepLab's choices (smp's encoders allow these two)
SHORTCUTS = ("A", "B", "none")


@dataclass
class ResNetConfig:
    """Architecture hyper-parameters of a :class:`ResNet`: the one schema of the ``custom`` backbone,
    used as is by the config section ``model.backbone.custom`` (hence the Literal / list types, which
    the config loader checks). Each field's ``help`` metadata is its one-line description (as
    ``resvision.config.setting`` writes it; that helper is not imported here because config.py
    imports this module).
    """

    block: Literal["basic", "bottleneck"] = field(default="bottleneck", metadata={
        "help": "basic: two 3x3 convs (ResNet-18/34, CIFAR nets); bottleneck: 1x1-3x3-1x1, 4x expansion"})
    layers: list[int] = field(default_factory=lambda: [3, 4, 6, 3], metadata={
        "help": "blocks per stage; any number of stages (4 for ImageNet nets, 3 for CIFAR)"})
    widths: list[int] | None = field(default=None, metadata={
        "help": "base width (planes) per stage, e.g. [16, 32, 64] for CIFAR nets; null: 64 x 2^i"})
    groups: int = field(default=1, metadata={"help": "groups of the bottleneck 3x3 conv (ResNeXt cardinality)"})
    width_per_group: int = field(default=64, metadata={
        "help": "bottleneck width per group: 64 plain, 4 or 8 ResNeXt, 128 Wide ResNet"})
    stem: Literal["imagenet", "cifar", "deep"] = field(default="imagenet", metadata={
        "help": "imagenet: 7x7/2 conv + 3x3/2 max-pool; cifar: 3x3/1 conv, no pool; deep: three 3x3 convs + pool "
                "(ResNet-C)"})
    stem_width: int | None = field(default=None, metadata={"help": "channels out of the stem; null: widths[0]"})
    shortcut: Literal["A", "B", "none"] = field(default="B", metadata={
        "help": "where the shape changes, B: 1x1 conv + BN projection; A: zero padding; none: plain net, no sum"})
    se: bool = field(default=False, metadata={"help": "squeeze-excitation in every block"})
    stride_in_1x1: bool = field(default=False, metadata={
        "help": "bottleneck stride on the first 1x1 conv (paper v1) instead of the 3x3 (torchvision v1.5)"})
    zero_init_residual: bool = field(default=False, metadata={
        "help": "zero each block's last BN gamma so every block starts as identity (Goyal et al. 2017)"})

    def resolved_widths(self) -> list[int]:
        """Per-stage base widths with the default filled in."""
        return list(self.widths) if self.widths is not None else [64 * 2 ** i for i in range(len(self.layers))]

    def validate(self) -> None:
        """Raises ConfigError naming the first invalid field."""
        _choice("block", self.block, BLOCKS)
        _choice("stem", self.stem, STEMS)
        _choice("shortcut", self.shortcut, SHORTCUTS)
        if not self.layers or any(not isinstance(n, int) or n < 1 for n in self.layers):
            raise ConfigError(f"layers must be a non-empty list of positive ints, got {list(self.layers)}")
        widths = self.resolved_widths()
        if len(widths) != len(self.layers) or any(not isinstance(w, int) or w < 1 for w in widths):
            raise ConfigError(f"widths must give one positive int per stage ({len(self.layers)}), got {widths}")
        for name in ("groups", "width_per_group"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.shortcut == "none" and self.zero_init_residual:
            raise ConfigError("zero_init_residual needs shortcuts: with shortcut 'none' a zeroed last BN would "
                              "cut every block's output")
        if self.stem_width is not None and self.stem_width < 2:
            raise ConfigError(f"stem_width must be >= 2, got {self.stem_width}")


def _choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _make_stem(stem: str, width: int, norm_layer: NormLayer) -> tuple[nn.Module, nn.Module, int]:
    """Returns ``(conv1, maxpool, stride of conv1)``; ``bn1`` always follows ``conv1``."""
    if stem == "imagenet":
        conv1: nn.Module = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        return conv1, nn.MaxPool2d(3, stride=2, padding=1), 2
    if stem == "deep":
        # Three 3x3 convs see the same 7x7 field with fewer MACs; same layout and names as timm's
        # resnet*d conv1 (conv1.0/.1/.3/.4/.6), the last BN being the shared bn1.
        mid = width // 2
        conv1 = nn.Sequential(conv3x3(3, mid, 2), norm_layer(mid), nn.ReLU(inplace=True),
                              conv3x3(mid, mid), norm_layer(mid), nn.ReLU(inplace=True), conv3x3(mid, width))
        return conv1, nn.MaxPool2d(3, stride=2, padding=1), 2
    # CIFAR (He et al. 2016, section 4.2): 32x32 inputs are too small to down-sample in the stem.
    return conv3x3(3, width), nn.Identity(), 1


class ResNet(Backbone):
    """ResNet feature extractor without the classifier (no avgpool, no fc).

    Outputs ``c2 ... c{S+1}`` after the S stages (``layer1 ... layerS``; conv2_x ... conv5_x in He et
    al. 2016, Table 1) and optionally ``c1``, the stem activation before max-pooling (stride 2),
    which U-Net style decoders use.

    Stages deeper than the deepest requested output are still built, so that full torchvision / timm
    checkpoints load strictly, but are not run. Under DDP their parameters then get no gradient:
    freeze them (``frozen_stages``) or use ``find_unused_parameters=True``.

    Args:
        cfg: Architecture hyper-parameters.
        out_features: Names to return; None = every stage (``c2`` ...).
        norm_layer: ``nn.BatchNorm2d`` or ``torchvision.ops.FrozenBatchNorm2d``.
        output_stride: 8 or 16: the stages that would stride past it dilate instead (stride 1, every conv of
            the stage dilated by the stride it gave up, as smp's encoders ``make_dilated``: DeepLab's output
            stride); the feature specs report the real strides and the parameters do not change, so
            torchvision / timm weights load as they are. None: the network's own strides.
    """

    def __init__(self, cfg: ResNetConfig, out_features: Sequence[str] | None = None,
                 norm_layer: NormLayer = nn.BatchNorm2d, output_stride: int | None = None) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        widths = cfg.resolved_widths()
        stem_width = cfg.stem_width or widths[0]
        # Same attribute order as torchvision so that state_dict() lists keys in the same order.
        self.conv1, maxpool, stride = _make_stem(cfg.stem, stem_width, norm_layer)
        self.bn1 = norm_layer(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = maxpool
        specs = [FeatureSpec("c1", stem_width, stride)]
        stride *= 2 if cfg.stem != "cifar" else 1
        inplanes = stem_width
        block = BLOCKS[cfg.block]
        _check_output_stride(output_stride, stride * 2 ** (len(cfg.layers) - 1))
        dilation = 1
        for i, (planes, blocks) in enumerate(zip(widths, cfg.layers)):
            stage_stride = 1 if i == 0 else 2
            if output_stride and stride * stage_stride > output_stride:
                dilation, stage_stride = dilation * stage_stride, 1
            layer, inplanes = self._make_layer(block, inplanes, planes, blocks, stage_stride, norm_layer, dilation)
            setattr(self, f"layer{i + 1}", layer)
            stride *= stage_stride
            specs.append(FeatureSpec(f"c{i + 2}", inplanes, stride))
        self.num_stages = len(cfg.layers)
        self.available_features: tuple[FeatureSpec, ...] = tuple(specs)
        self.feature_specs = select_specs(specs, out_features, default=[s.name for s in specs[1:]])
        self._out_names = frozenset(self.feature_names)
        self._init_weights(cfg.zero_init_residual)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int,
                    blocks: int, stride: int, norm_layer: NormLayer, dilation: int = 1) -> tuple[nn.Sequential, int]:
        cfg = self.cfg
        out_ch = planes * block.expansion
        downsample: nn.Module | None = None
        if cfg.shortcut != "none" and (stride != 1 or inplanes != out_ch):
            if cfg.shortcut == "A":
                downsample = ShortcutA(inplanes, out_ch, stride)
            else:
                downsample = nn.Sequential(conv1x1(inplanes, out_ch, stride), norm_layer(out_ch))
        options = dict(groups=cfg.groups, base_width=cfg.width_per_group, norm_layer=norm_layer,
                       se=cfg.se, stride_in_1x1=cfg.stride_in_1x1, residual=cfg.shortcut != "none", dilation=dilation)
        layers = [block(inplanes, planes, stride, downsample, **options)]
        layers += [block(out_ch, planes, **options) for _ in range(1, blocks)]
        return nn.Sequential(*layers), out_ch

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's init: He et al. 2015 normal init with fan_out for ReLU nets, BN = identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                last_bn = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
                if last_bn is not None and last_bn.weight is not None:
                    nn.init.constant_(last_bn.weight, 0)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Runs the stem and the stages up to the deepest requested output.

        Args:
            x: Images, shape ``(N, 3, H, W)``.

        Returns:
            ``{name: (N, C, H / stride, W / stride)}`` for each of :attr:`feature_specs`.
        """
        out: dict[str, Tensor] = {}
        x = self.relu(self.bn1(self.conv1(x)))
        if "c1" in self._out_names:
            out["c1"] = x
        x = self.maxpool(x)
        for i in range(self.num_stages):
            if len(out) == len(self._out_names):
                break  # deeper stages are not needed: skip their compute
            x = getattr(self, f"layer{i + 1}")(x)
            if f"c{i + 2}" in self._out_names:
                out[f"c{i + 2}"] = x
        return out

    def stage_modules(self) -> list[nn.Module]:
        """``[stem, layer1, ..., layerS]``.

        The stem is a ``Sequential`` *view* over ``conv1, bn1, relu, maxpool`` built on each call (the
        modules stay top-level attributes so that parameter names match torchvision).
        """
        stem = nn.Sequential(OrderedDict(conv1=self.conv1, bn1=self.bn1, relu=self.relu, maxpool=self.maxpool))
        return [stem, *(getattr(self, f"layer{i + 1}") for i in range(self.num_stages))]

    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """Drops the classifier (``fc.*``) of torchvision / timm / task checkpoints."""
        kept = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        return kept, sorted(set(state_dict) - set(kept))


def _check_output_stride(output_stride: int | None, deepest: int) -> None:
    """One line naming the setting when a network cannot reach ``output_stride`` by dilating its stages."""
    if output_stride is None:
        return
    if output_stride not in OUTPUT_STRIDES:
        raise ConfigError(f"output_stride must be one of {list(OUTPUT_STRIDES)} (None keeps the network's own "
                          f"strides), got {output_stride}")
    if output_stride >= deepest:
        raise ConfigError(f"output_stride={output_stride}: this network's deepest stride is already {deepest}; "
                          "dilation can only lower it (leave output_stride unset)")


def _build(cfg: ResNetConfig, out_features: Sequence[str] | None, norm: str,
           output_stride: int | None = None) -> ResNet:
    return ResNet(cfg, out_features=out_features, norm_layer=NORM_LAYERS[norm], output_stride=output_stride)


# name -> (block, layers, groups, width_per_group): the hyper-parameters of torchvision.models.resnet.
TORCHVISION_ARCHS: dict[str, tuple[str, tuple[int, ...], int, int]] = {
    "resnet18": ("basic", (2, 2, 2, 2), 1, 64),
    "resnet34": ("basic", (3, 4, 6, 3), 1, 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 1, 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 1, 64),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 1, 64),
    "resnext50_32x4d": ("bottleneck", (3, 4, 6, 3), 32, 4),
    "resnext101_32x8d": ("bottleneck", (3, 4, 23, 3), 32, 8),
    "wide_resnet50_2": ("bottleneck", (3, 4, 6, 3), 1, 128),
    "wide_resnet101_2": ("bottleneck", (3, 4, 23, 3), 1, 128),
}
# name -> depth: 6n + 2 layers, n BasicBlocks per stage (He et al. 2016, section 4.2).
CIFAR_ARCHS: dict[str, int] = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
# plain name -> its residual counterpart (the same layers; He et al. 2016 compare plain-18/34 and plain-20...110)
PLAIN_ARCHS: dict[str, str] = {"plain18": "resnet18", "plain34": "resnet34", "plain20": "resnet20", "plain32": "resnet32",
                               "plain44": "resnet44", "plain56": "resnet56", "plain110": "resnet110"}


def _torchvision_builder(name: str, plain: bool = False) -> Callable[..., ResNet]:
    """``name`` (``resnet18`` ...) or, with ``plain``, its plain counterpart ``plain18`` (no shortcuts)."""
    block, layers, groups, width_per_group = TORCHVISION_ARCHS[name]
    registered = name.replace("resnet", "plain") if plain else name

    def builder(*, out_features: Sequence[str] | None = None, norm: str = "bn",
                zero_init_residual: bool = False, stem: str = "imagenet", output_stride: int | None = None) -> ResNet:
        # stem="cifar" (3x3 stride-1 conv, no max-pool) is the input stem of face ResNets for 112x112 crops;
        # its conv1 differs from torchvision's, so torchvision weights then load only with a strict-load error.
        cfg = ResNetConfig(block=block, layers=list(layers), groups=groups, width_per_group=width_per_group,
                           zero_init_residual=zero_init_residual, stem=stem, shortcut="none" if plain else "B")
        return _build(cfg, out_features, norm, output_stride)

    builder.__name__ = builder.__qualname__ = registered
    builder.__doc__ = (f"{registered}: {block} blocks {list(layers)}, groups={groups}, width_per_group="
                       f"{width_per_group}; " + (f"the plain network of He et al. 2016 (Table 1 / Fig. 3): {name}'s "
                       "layers without shortcuts or projections." if plain else
                       f"same parameters as torchvision.models.{name}."))
    return register_backbone(registered)(builder)


def _cifar_builder(name: str, plain: bool = False) -> Callable[..., ResNet]:
    """CIFAR ``resnetN`` or, with ``plain``, ``plainN``: the same layers without shortcuts (section 4.2)."""
    n = (CIFAR_ARCHS[name] - 2) // 6
    registered = name.replace("resnet", "plain") if plain else name

    def builder(*, out_features: Sequence[str] | None = None, norm: str = "bn",
                zero_init_residual: bool = False, output_stride: int | None = None) -> ResNet:
        cfg = ResNetConfig(block="basic", layers=[n, n, n], widths=[16, 32, 64], stem="cifar",
                           shortcut="none" if plain else "A", zero_init_residual=zero_init_residual)
        return _build(cfg, out_features, norm, output_stride)

    builder.__name__ = builder.__qualname__ = registered
    builder.__doc__ = (f"CIFAR {registered} (He et al. 2016, section 4.2): 3x3 16-channel stem, 3 stages of {n} "
                       "basic blocks with 16/32/64 channels, " + ("no shortcuts (the paper's plain net)"
                       if plain else "option-A shortcuts") + "; outputs c2/c3/c4 at strides 1/2/4.")
    return register_backbone(registered)(builder)


resnet18 = _torchvision_builder("resnet18")
resnet34 = _torchvision_builder("resnet34")
resnet50 = _torchvision_builder("resnet50")
resnet101 = _torchvision_builder("resnet101")
resnet152 = _torchvision_builder("resnet152")
resnext50_32x4d = _torchvision_builder("resnext50_32x4d")
resnext101_32x8d = _torchvision_builder("resnext101_32x8d")
wide_resnet50_2 = _torchvision_builder("wide_resnet50_2")
wide_resnet101_2 = _torchvision_builder("wide_resnet101_2")
resnet20 = _cifar_builder("resnet20")
resnet32 = _cifar_builder("resnet32")
resnet44 = _cifar_builder("resnet44")
resnet56 = _cifar_builder("resnet56")
resnet110 = _cifar_builder("resnet110")
plain18 = _torchvision_builder(PLAIN_ARCHS["plain18"], plain=True)
plain34 = _torchvision_builder(PLAIN_ARCHS["plain34"], plain=True)
plain20 = _cifar_builder(PLAIN_ARCHS["plain20"], plain=True)
plain32 = _cifar_builder(PLAIN_ARCHS["plain32"], plain=True)
plain44 = _cifar_builder(PLAIN_ARCHS["plain44"], plain=True)
plain56 = _cifar_builder(PLAIN_ARCHS["plain56"], plain=True)
plain110 = _cifar_builder(PLAIN_ARCHS["plain110"], plain=True)


@register_backbone("custom")
def custom(*, out_features: Sequence[str] | None = None, norm: str = "bn", output_stride: int | None = None,
           **options: Any) -> ResNet:
    """A ResNet assembled from options, the fields of :class:`ResNetConfig` (see it for their meaning).

    Example: ``build_backbone("custom", block="basic", layers=[1, 1, 1], widths=[16, 32, 64],
    stem="cifar", se=True)``.

    Raises:
        ConfigError: An option that is not a ResNetConfig field, or an invalid value.
    """
    valid = sorted(f.name for f in dataclasses.fields(ResNetConfig))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for backbone 'custom'; valid options: {valid}")
    return _build(ResNetConfig(**options), out_features, norm, output_stride)
