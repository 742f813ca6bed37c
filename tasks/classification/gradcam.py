"""Grad-CAM (Selvaraju et al., ICCV 2017) on the classifier's last backbone feature map."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def grad_cam(model: nn.Module, images: torch.Tensor, classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-activation maps for ``classes`` (default: the predicted class), on the deepest feature map of
    ``model.backbone``: any classifier that calls its registry backbone (ours, or a registered head).

    Args:
        model: the classifier (eval mode), ``images -> logits``, holding its registry backbone as ``backbone``.
        images: (N, 3, H, W) normalised images.
        classes: (N,) class indices to explain, or None for the argmax.

    Returns:
        ``(cams, classes)``: (N, H, W) maps in [0, 1] upsampled to the input size, and the classes used.
    """
    deepest = model.backbone.feature_specs[-1].name
    seen: list[torch.Tensor] = []

    def leaf(module: nn.Module, inputs: Any, output: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # the map becomes a leaf that requires grad: its gradient exists even where the backbone is frozen
        seen.append(output[deepest].detach().requires_grad_(True))
        return {**output, deepest: seen[-1]}

    with torch.inference_mode(False), torch.enable_grad():
        hook = model.backbone.register_forward_hook(leaf)
        try:
            logits = model(images)
        finally:
            hook.remove()
        features = seen[-1]
        if classes is None:
            classes = logits.argmax(dim=1)
        score = logits.gather(1, classes[:, None]).sum()
        (grads,) = torch.autograd.grad(score, features)
    # Eq. 1-2 of the paper: channel weights = spatially averaged gradients; ReLU keeps the evidence for the class.
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cams = F.relu((weights * features.detach()).sum(dim=1, keepdim=True))
    cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cams.flatten(1).amax(dim=1).clamp_min(1e-12)
    return cams / peak[:, None, None], classes
