"""Additive-margin softmax heads for face recognition: ArcFace, CosFace and insightface's combined margin.

Each margin is a pure ``(cosine, labels) -> logits`` transform without parameters: ``cosine`` is the (B, C)
matrix of cosines between L2-normalised embeddings and L2-normalised class centres, the target entry of row
``i`` (column ``labels[i]``) is penalised and every entry is scaled by ``s``; cross-entropy on the result is
the loss. Written after insightface ``recognition/arcface_torch/losses.py`` (the 2022 version, with
ArcFace's ``theta + m > pi`` branch) and the combined form of ``recognition/arcface_mxnet/train.py``:

* ArcFace  ``s * cos(theta + m)``, computed as ``cos(theta) cos(m) - sin(theta) sin(m)``. Past
  ``theta = pi - m`` that curve would rise again (a worse match would get a larger logit); insightface
  then uses ``cos(theta) - sin(pi - m) * m`` instead, which keeps the logit decreasing in ``theta`` (with a
  step down at the switch: from -1 to ``cos(pi - m) - sin(pi - m) * m``, -1.117 for m = 0.5). With
  ``easy_margin`` the margin applies only where ``cos(theta) > 0``.
* CosFace  ``s * (cos(theta) - m)``.
* Combined ``s * (cos(m1 * theta + m2) - m3)``. insightface's general form has no safe branch; its torch
  ``CombinedMarginLoss`` applies ArcFace's branch when ``m1 == 1`` and ``m3 == 0`` (pure ArcFace), and so
  does ours, so ``combined`` with those values equals ``arcface``.

A row whose label is -1 gets no margin (only the scale): insightface's convention for a sample whose class
lives on another rank when the class centres are sharded. Nothing here talks to torch.distributed.

Cosines are clamped into [-1, 1] (the values only; the gradient passes unchanged) and ``sin(theta)`` is
``sqrt(max(1 - cos^2, eps))``: the derivatives of ``acos`` / ``sqrt`` are infinite at ``cos = +-1`` (which
normalised vectors reach), and ``torch.where`` would turn that infinity into NaN even in the branch it does
not select. Cosines and margins are computed in float32, whatever the autocast dtype. (insightface's current
``losses.py`` instead applies the margin under ``no_grad``, so its gradient ignores the margin, and has
dropped the branch; we keep the earlier, exact-gradient version.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError

# 1 - cos^2 floor under sqrt: sin(theta) >= 1e-6, so gradients stay finite; the value moves by < 1e-6.
_EPS = 1e-12

MARGINS = ("arcface", "cosface", "combined")


def _sin_from_cos(cosine: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((1.0 - cosine * cosine).clamp_min(_EPS))


def _arcface_target(cosine: torch.Tensor, m: float, easy_margin: bool) -> torch.Tensor:
    """cos(theta + m) with insightface's branches (module docstring); ``cosine`` already clamped."""
    cos_theta_m = cosine * math.cos(m) - _sin_from_cos(cosine) * math.sin(m)
    if easy_margin:
        return torch.where(cosine > 0, cos_theta_m, cosine)
    # theta > pi - m  <=>  cos(theta) <= cos(pi - m): continue along a line of the same slope
    return torch.where(cosine > math.cos(math.pi - m), cos_theta_m, cosine - math.sin(math.pi - m) * m)


class _Margin(nn.Module):
    """Shared plumbing: pick each row's target cosine, transform it, put it back, scale everything."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = float(s)

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Args: cosine (B, C) in [-1, 1]; labels (B,) int in [0, C), or -1 for no margin.
        Returns (B, C) logits, float32 or wider."""
        if cosine.dim() != 2 or labels.shape != cosine.shape[:1]:
            raise ValueError(f"cosine must be (B, C) and labels (B,), got {tuple(cosine.shape)} and "
                             f"{tuple(labels.shape)}")
        cosine = cosine.to(torch.promote_types(cosine.dtype, torch.float32))
        # Clamp the value only: torch.clamp's gradient is 0 at the bounds themselves, where a sample that
        # matches its class centre sits, so pass the gradient straight through.
        cosine = cosine + (cosine.clamp(-1.0, 1.0) - cosine).detach()
        labels = labels.long()
        keep = labels == -1
        # Rows labelled -1 read and write back column 0 unchanged: no masks over the whole (B, C) matrix,
        # which can hold hundreds of thousands of classes.
        index = labels.masked_fill(keep, 0).unsqueeze(1)
        target = cosine.gather(1, index)
        target = torch.where(keep.unsqueeze(1), target, self.target_logit(target))
        return self.s * cosine.scatter(1, index, target)


class ArcFace(_Margin):
    """Additive angular margin (Deng et al., CVPR 2019): target logit ``s * cos(theta + m)``."""

    def __init__(self, s: float = 64.0, m: float = 0.5, easy_margin: bool = False) -> None:
        super().__init__(s)
        self.m = float(m)
        self.easy_margin = bool(easy_margin)

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        return _arcface_target(cosine, self.m, self.easy_margin)

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}, easy_margin={self.easy_margin}"


class CosFace(_Margin):
    """Large margin cosine loss (Wang et al., CVPR 2018): target logit ``s * (cos(theta) - m)``."""

    def __init__(self, s: float = 64.0, m: float = 0.35) -> None:
        super().__init__(s)
        self.m = float(m)

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine - self.m

    def extra_repr(self) -> str:
        return f"s={self.s}, m={self.m}"


class CombinedMargin(_Margin):
    """insightface's combined margin: target logit ``s * (cos(m1 * theta + m2) - m3)``.

    ``m1 = 1, m3 = 0`` is ArcFace and takes its ``theta + m2 > pi`` branch; otherwise the formula is applied
    as is (as insightface does), so once ``m1 * theta + m2`` passes pi the target logit rises again.
    """

    def __init__(self, s: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0) -> None:
        super().__init__(s)
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)

    def target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        if self.m1 == 1.0 and self.m3 == 0.0:
            return _arcface_target(cosine, self.m2, easy_margin=False)
        theta = torch.atan2(_sin_from_cos(cosine), cosine)  # acos with a finite gradient at +-1
        return torch.cos(self.m1 * theta + self.m2) - self.m3

    def extra_repr(self) -> str:
        return f"s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}"


class MarginHead(nn.Module):
    """Class centres + margin: ``forward(embeddings, labels)`` -> margin logits for cross-entropy.

    Args:
        embedding_size: D, the embedding dimension.
        num_classes: C, the training identities.
        margin: a ``(cosine, labels) -> logits`` transform (:func:`build_margin`).
    """

    def __init__(self, embedding_size: int, num_classes: int, margin: nn.Module) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, 0.0, 0.01)  # insightface's fc7 init; only directions matter
        self.margin = margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) embeddings -> (B, C) float32 cosines to every class centre, no margin (closed-set accuracy).

        Outside autocast: in bf16 a cosine near 1 is off by ~0.004, which ArcFace's sin(theta) turns into
        logit errors of several units at s=64."""
        with torch.autocast(embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.margin(self.cosine(embeddings), labels)


def build_margin(name: str, s: float, m: float, easy_margin: bool = False, m1: float = 1.0,
                 m3: float = 0.0) -> nn.Module:
    """The margin named ``name`` (arcface / cosface / combined); ``m`` is ArcFace's angle, CosFace's cosine
    offset or the combined margin's ``m2``. ``easy_margin`` applies to ArcFace only, ``m1`` / ``m3`` to the
    combined margin only.

    Raises:
        ConfigError: an unknown name.
    """
    if name == "arcface":
        return ArcFace(s=s, m=m, easy_margin=easy_margin)
    if name == "cosface":
        return CosFace(s=s, m=m)
    if name == "combined":
        return CombinedMargin(s=s, m1=m1, m2=m, m3=m3)
    raise ConfigError(f"model.margin={name!r} is not a margin; choose one of {', '.join(MARGINS)}")
