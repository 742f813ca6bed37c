"""Task registry: each task owns its model, loss, data, postprocessing, evaluator and report."""

from __future__ import annotations

import difflib
import importlib

from ..errors import ConfigError
from .base import Evaluator, Task

# Task name -> module that defines it. A fixed table, not a string from the config: configs never
# choose which code is imported.
_TASK_MODULES = {
    "classification": "resvision.tasks.classification",
    "detection": "resvision.tasks.detection",
}


def list_tasks() -> list[str]:
    return sorted(_TASK_MODULES)


def get_task_class(name: str) -> type[Task]:
    """Return the Task subclass registered as ``name`` (ConfigError with close matches otherwise)."""
    if name not in _TASK_MODULES:
        close = difflib.get_close_matches(name, list(_TASK_MODULES), n=2)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown task {name!r}{hint}; tasks: {', '.join(list_tasks())}")
    return importlib.import_module(_TASK_MODULES[name]).TASK


def build_task(cfg) -> Task:
    """Instantiate the task named by ``cfg.task``."""
    return get_task_class(cfg.task)(cfg)


__all__ = ["Evaluator", "Task", "build_task", "get_task_class", "list_tasks"]
