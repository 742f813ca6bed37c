"""Face recognition model: registry backbone -> embedding head -> margin head (ArcFace / CosFace / combined).

The embedding head is insightface's IResNet output block: BatchNorm2d on the deepest feature map, dropout,
flatten, linear, BatchNorm1d. It flattens instead of pooling because aligned faces put the eyes and
the mouth at fixed places, so *where* a feature fires carries identity; the input size is therefore part of
the model and fixed when it is built.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError
from ...modes import eval_mode
from .margin import MarginHead


class FaceModel(nn.Module):
    """``model(images)`` -> embeddings ``(N, D)`` (not normalised); ``model(images, labels)`` -> margin logits.

    Training goes through ``forward`` with labels so that DistributedDataParallel sees every parameter used
    in its forward (the margin head's class weights included).

    Args:
        backbone: Registry backbone; its deepest declared output feeds the head.
        margin: A ``(cosine, labels) -> logits`` transform (:func:`~resvision.tasks.face.margin.build_margin`).
        num_classes: Training identities (rows of the margin head).
        input_size: Square input side the model is built for (the flattened map's size depends on it).
        embedding_size: Embedding dimension (512 in insightface).
        dropout: Dropout before the linear layer.
    """

    def __init__(self, backbone: nn.Module, margin: nn.Module, num_classes: int, input_size: int,
                 embedding_size: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.input_size = input_size
        self.feature = backbone.feature_specs[-1].name
        channels, height, width = self._feature_shape(input_size)
        self.embedding = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(channels * height * width, embedding_size),
            nn.BatchNorm1d(embedding_size),
        )
        self.head = MarginHead(embedding_size, num_classes, margin)

    @torch.no_grad()
    def _feature_shape(self, size: int) -> tuple[int, int, int]:
        with eval_mode(self.backbone):
            shape = self.backbone(torch.zeros(1, 3, size, size))[self.feature].shape[1:]
        if shape[1] < 1 or shape[2] < 1:
            raise ConfigError(f"data.image_size={size} is too small for this backbone (its {self.feature} map is empty)")
        return tuple(shape)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if images.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"face model built for {self.input_size}x{self.input_size} inputs, got "
                             f"{tuple(images.shape[-2:])}")
        embeddings = self.embedding(self.backbone(images)[self.feature])
        return embeddings if labels is None else self.head(embeddings, labels)


def flip_embeddings(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The LFW protocol's embedding: the image's and its horizontal mirror's embeddings summed, then
    L2-normalised (insightface ``eval/verification.py``, facenet's evaluation)."""
    summed = model(images).float() + model(images.flip(-1)).float()
    return nn.functional.normalize(summed, dim=1)
