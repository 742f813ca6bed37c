"""The shared fine-tuning engine: Trainer, callbacks, policy/optimizer/schedule, checkpoints, DDP."""

from .callbacks import Callback, Checkpointer, CurvePlotter, EarlyStopping, MetricsLogger, ScheduledUnfreeze
from .checkpoint import load_checkpoint, save_checkpoint
from .optim import apply_finetune_policy, build_optimizer, build_scheduler, param_groups
from .trainer import Trainer, TrainingDiverged

__all__ = [
    "Callback", "Checkpointer", "CurvePlotter", "EarlyStopping", "MetricsLogger", "ScheduledUnfreeze",
    "Trainer", "TrainingDiverged", "apply_finetune_policy", "build_optimizer", "build_scheduler",
    "load_checkpoint", "param_groups", "save_checkpoint",
]
