"""Backbones: a registry of feature extractors with declared outputs, freezing and weight loading.

>>> from resvision.backbone import build_backbone
>>> net = build_backbone("resnet50", out_features=["c3", "c4", "c5"], frozen_stages=1)
>>> [(s.name, s.channels, s.stride) for s in net.feature_specs]
[('c3', 512, 8), ('c4', 1024, 16), ('c5', 2048, 32)]
"""

from resvision.backbone.base import Backbone, FeatureSpec, count_parameters
from resvision.backbone.registry import (
    NORMS, build_backbone, build_backbone_from_config, get_backbone_builder, list_backbones, register_backbone,
)
from resvision.backbone.weights import LoadReport, load_pretrained, read_state_dict

# Imported for their @register_backbone side effects (timm itself is imported only when used).
from resvision.backbone import resnet as _resnet  # noqa: E402,F401  isort: skip
from resvision.backbone import timm_backbone as _timm_backbone  # noqa: E402,F401  isort: skip
from resvision.backbone.resnet import ResNet, ResNetConfig  # noqa: E402  isort: skip
from resvision.backbone.timm_backbone import TimmBackbone  # noqa: E402  isort: skip

__all__ = [
    "Backbone", "FeatureSpec", "LoadReport", "NORMS", "ResNet", "ResNetConfig", "TimmBackbone",
    "build_backbone", "build_backbone_from_config", "count_parameters", "get_backbone_builder", "list_backbones",
    "load_pretrained", "read_state_dict", "register_backbone",
]
