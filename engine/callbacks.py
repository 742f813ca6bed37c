"""Trainer callbacks. Seven events, each receiving the Trainer (read its state, never re-derive it).

Events: ``on_train_start``, ``on_epoch_start``, ``on_before_optimizer_step`` (gradients final: unscaled, not
yet clipped or applied), ``on_step_end``, ``on_validation_end``, ``on_epoch_end``, ``on_train_end``. Callbacks that write files do so on rank 0 only.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, UserError
from . import distributed as dist_utils
from .checkpoint import copy_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from .trainer import Trainer

log = logging.getLogger("resvision")



_TERM = re.compile(r"\s*(?:(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*\*\s*)?([^\s*+]+)\s*")


def monitor_terms(monitor: str) -> list[tuple[float, str]]:
    """``train.monitor`` read as ``[(weight, metric name), ...]``: one metric (``mIoU``, a joint run's
    ``face/verif_acc``) or a weighted sum, ``"0.5*detection/bbox_AP50 + 0.5*segmentation/mIoU"`` (numbers, names,
    ``*`` and ``+`` only: read as data, never evaluated as code). A one-line ConfigError names a term that does not
    parse."""
    terms = []
    for term in monitor.split(" + ") if " + " in monitor else [monitor]:
        match = _TERM.fullmatch(term)
        if match is None:
            raise ConfigError(f"train.monitor={monitor!r}: {term.strip()!r} is not a metric name or <weight>*<metric>")
        weight, name = match.groups()
        terms.append((float(weight or 1.0), name))
    return terms


def monitored_value(monitor: str, metrics: dict[str, Any]) -> float:
    """The value ``train.monitor`` (:func:`monitor_terms`) names in ``metrics``; a one-line UserError names a metric
    that does not exist."""
    total = 0.0
    for weight, name in monitor_terms(monitor):
        if name not in metrics:
            raise UserError(f"train.monitor={monitor!r}: {name!r} is not a metric of this task "
                            f"({', '.join(metrics)})")
        total += weight * float(metrics[name])
    return total


class Callback:
    """Base class: override the events you need."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_epoch_start(self, trainer: Trainer) -> None: ...
    def on_before_optimizer_step(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer) -> None: ...
    def on_validation_end(self, trainer: Trainer) -> None: ...
    def on_epoch_end(self, trainer: Trainer) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


class ScheduledUnfreeze(Callback):
    """Unfreeze backbone stages at the epochs given by ``finetune.unfreeze_at``.

    At train start it replays every entry before the start epoch, so a resumed run has the same
    trainable set as an uninterrupted one.
    """

    def on_train_start(self, trainer: Trainer) -> None:
        from .optim import stages_to_unfreeze

        earlier = [s for e in range(trainer.start_epoch) for s in stages_to_unfreeze(trainer.cfg.finetune, e)]
        if earlier:
            trainer.unfreeze(earlier)

    def on_epoch_start(self, trainer: Trainer) -> None:
        from .optim import stages_to_unfreeze

        stages = stages_to_unfreeze(trainer.cfg.finetune, trainer.epoch)
        if stages:
            trainer.unfreeze(stages)
            log.info("epoch %d: unfroze backbone stages %s", trainer.epoch, stages)


class MetricsLogger(Callback):
    """Rows in ``metrics.jsonl`` and TensorBoard scalars: train losses/LR every ``log_every``
    updates and per epoch, validation metrics after every evaluation."""

    def __init__(self, log_every: int) -> None:
        self.log_every = log_every
        self.writer = None

    def on_train_start(self, trainer: Trainer) -> None:
        if not dist_utils.is_main_process():
            return
        path = trainer.run_dir / "metrics.jsonl"
        if path.exists():  # resumed: drop rows from epochs that will be run again
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if r.get("epoch", 0) < trainer.start_epoch]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(trainer.run_dir / "tensorboard"), purge_step=trainer.global_step or None)

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.global_step % self.log_every == 0:
            self.write(trainer, "train", {**trainer.step_losses, "lr": trainer.lr})

    def on_validation_end(self, trainer: Trainer) -> None:
        self.write(trainer, "val", trainer.metrics)

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.write(trainer, "train_epoch", {**trainer.epoch_losses, "lr": trainer.lr, "seconds": trainer.epoch_seconds})

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()

    def write(self, trainer: Trainer, split: str, values: dict[str, Any]) -> None:
        if not dist_utils.is_main_process() or not values:
            return
        row = {"split": split, "epoch": trainer.epoch, "step": trainer.global_step, **values}
        with open(trainer.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{split}/{key}", value, trainer.global_step)


class Checkpointer(Callback):
    """``checkpoints/last.pt`` every ``every`` epochs and at the end; ``best.pt`` when the monitored
    metric improves. Both are written atomically."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_epoch_end(self, trainer: Trainer) -> None:
        if not dist_utils.is_main_process():
            return
        done = trainer.epoch + 1
        last = trainer.run_dir / "checkpoints" / "last.pt"
        if done % self.every == 0 or trainer.is_last_epoch or trainer.should_stop or trainer.improved:
            save_checkpoint(trainer.state_dict(), last)
        if trainer.improved:
            copy_checkpoint(last, last.with_name("best.pt"))


class EarlyStopping(Callback):
    """Stop after ``patience`` evaluations without improvement of the monitored metric."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_validation_end(self, trainer: Trainer) -> None:
        stale = trainer.evaluations_since_best
        if stale >= self.patience:
            trainer.should_stop = True
            log.info("early stopping: %s did not improve for %d evaluations", trainer.monitor, stale)


class CurvePlotter(Callback):
    """PNG curves of losses, learning rate and validation metrics from ``metrics.jsonl``."""

    def on_train_end(self, trainer: Trainer) -> None:
        if dist_utils.is_main_process():
            from ..reports import plot_training_curves

            plot_training_curves(trainer.run_dir / "metrics.jsonl", trainer.run_dir / "plots")


class PlainProgress(Callback):
    """One line per epoch and per evaluation instead of the progress bar when stderr is not a terminal (a log
    file, nohup, CI), where tqdm's carriage-return redraws would fill the log."""

    def on_train_start(self, trainer: Trainer) -> None:
        self.start, self.first = time.perf_counter(), trainer.start_epoch

    def on_epoch_end(self, trainer: Trainer) -> None:
        if not dist_utils.is_main_process():
            return
        done = trainer.epoch + 1 - self.first
        eta = (time.perf_counter() - self.start) / max(done, 1) * (trainer.epochs - trainer.epoch - 1)
        per_rank = min(trainer.epoch_batches * trainer.cfg.train.batch_size, len(trainer.train_sampler))  # last: partial
        images = per_rank * dist_utils.world_size()
        log.info("epoch %d/%d  step %d  loss %.4f  lr %.3g  %.1f img/s  %.1f s  ETA %s", trainer.epoch + 1,
                 trainer.epochs, trainer.global_step, trainer.epoch_losses.get("loss", math.nan), trainer.lr,
                 images / max(trainer.epoch_seconds, 1e-9), trainer.epoch_seconds, _duration(eta))

    def on_validation_end(self, trainer: Trainer) -> None:
        if dist_utils.is_main_process():
            value = monitored_value(trainer.monitor, trainer.metrics) if trainer.monitor else math.nan
            log.info("epoch %d/%d  validation %s %.4f", trainer.epoch + 1, trainer.epochs, trainer.monitor, value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class DivergenceWatch(Callback):
    """Warns once when an epoch's mean loss is far above its level over the first optimizer steps: a run that
    diverges without reaching inf / NaN (which stops it) otherwise goes on silently at chance accuracy."""

    early_steps, factor = 20, 3.0

    def __init__(self) -> None:
        self.early: list[float] = []
        self.warned = False

    def on_step_end(self, trainer: Trainer) -> None:
        if len(self.early) < self.early_steps:
            self.early.append(trainer.step_losses["loss"])

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.warned or len(self.early) < self.early_steps or not dist_utils.is_main_process():
            return
        level, loss = sum(self.early) / len(self.early), trainer.epoch_losses.get("loss", 0.0)
        if loss > self.factor * level:
            self.warned = True
            log.warning("loss %.4g in epoch %d is %.1fx its level over the first %d steps (%.4g): training is "
                        "probably diverging; try a lower optim.lr (now %g), sched.warmup_epochs or train.clip_grad",
                        loss, trainer.epoch + 1, loss / level, self.early_steps, level, trainer.cfg.optim.lr)
