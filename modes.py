"""Module mode helpers: :func:`eval_mode`, the one way code outside the training loop runs a model in eval mode.

Imports nothing heavy (no torch at import time), so every layer (backbone, engine, tasks, tools) can use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch import nn

__all__ = ["eval_mode"]

M = TypeVar("M", bound="nn.Module")


@contextlib.contextmanager
def eval_mode(module: M) -> Iterator[M]:
    """``with eval_mode(model): ...`` runs the block with ``model`` in eval mode, then gives it back the mode it
    had (training or eval), also when the block raises. Gradients are not touched: add ``torch.no_grad()`` /
    ``torch.inference_mode()`` where the block needs none (Grad-CAM needs them)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
