"""What every task provides to the Trainer, and the evaluator protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..engine import distributed as dist_utils


class Evaluator:
    """Accumulates predictions and turns them into metrics and report files.

    Subclasses list the per-sample lists they accumulate in ``state_fields``; :meth:`gather`
    merges those lists from every rank, so with a sharded (not padded) validation sampler each
    sample is counted exactly once.
    """

    state_fields: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        for name in self.state_fields:
            setattr(self, name, [])

    def update(self, predictions: Any, targets: Any) -> None:
        raise NotImplementedError

    def gather(self) -> None:
        """Replace the local state by the concatenation of every rank's state (no-op on one process)."""
        for name in self.state_fields:
            setattr(self, name, dist_utils.all_gather_list(getattr(self, name)))

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def load_meta(self, meta: dict[str, Any]) -> None:
        """Restore what :meth:`checkpoint_meta` saved (predicting without the training data)."""

    def write_report(self, run_dir: str | Path) -> None:
        """Write JSON/CSV/PNG files under ``run_dir`` (rank 0 only)."""


class Task:
    """Glue between a :class:`~resvision.config.Config` and the typed pieces of one task.

    The Trainer only talks to this interface: it never knows whether it trains a classifier or a
    detector. ``model.backbone`` must be a registry :class:`~resvision.backbone.Backbone` so the
    fine-tuning policy can freeze, unfreeze and group its stages.
    """

    name: str = ""
    ModelConfig: type
    DataConfig: type
    default_config: str = ""  # packaged config used by `--task NAME` without `--config`
    main_metric: str = ""
    main_metric_mode: str = "max"

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def backbone_of(self, model: nn.Module) -> nn.Module:
        """The registry Backbone inside ``model`` (the fine-tuning policy acts on it alone)."""
        return model.backbone

    def build_datasets(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        raise NotImplementedError

    def collate_fn(self) -> Callable | None:
        return None

    def training_step(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, torch.Tensor]:
        """Forward one batch and return named losses; the Trainer back-propagates their sum."""
        raise NotImplementedError

    def evaluation_step(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[Any, Any]:
        """Forward one batch in eval mode; return ``(predictions, targets)`` for the evaluator."""
        raise NotImplementedError

    def build_evaluator(self) -> Evaluator:
        raise NotImplementedError

    def checkpoint_meta(self) -> dict[str, Any]:
        """Extra facts stored in checkpoints (class names...), needed to predict without the data."""
        return {}

    def load_meta(self, meta: dict[str, Any]) -> None:
        """Restore what :meth:`checkpoint_meta` saved (predicting without the training data)."""

    def write_report(self, run_dir: Path, model: nn.Module, evaluator: Evaluator) -> None:
        evaluator.write_report(run_dir)
