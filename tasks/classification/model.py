"""Image classifier: a registry backbone, global average pooling, dropout and a linear layer.

The attribute names (``backbone``, ``fc``) make a torchvision ResNet state dict map onto this
model as ``backbone.<key>`` plus ``fc.*`` unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ...backbone import Backbone


class ImageClassifier(nn.Module):
    """Backbone -> last feature map -> avgpool -> dropout -> fc.

    Args:
        backbone: any registry backbone; its last ``feature_specs`` entry feeds the head.
        num_classes: output logits.
        dropout: dropout probability before ``fc``.
    """

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature = backbone.feature_specs[-1].name
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.feature_specs[-1].channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> last feature map (N, C, H/s, W/s)."""
        return self.backbone(x)[self.feature]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> logits (N, num_classes)."""
        return self.fc(self.dropout(features.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, num_classes) logits."""
        return self.forward_head(self.forward_features(x))
